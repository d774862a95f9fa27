"""Plain HTTP request handling shared by the adapters that receive a body and headers."""

from __future__ import annotations

import json

from functions.core import FunctionCore, FunctionError, MethodNotAllowed

JSON = "application/json"


def respond(
    core: FunctionCore, method: str, body: bytes | str | None, request_id: str | None = None
) -> tuple[int, str]:
    """(status, JSON text) for one HTTP request: GET describes the model, POST scores
    (``request_id``: the platform's id of the request, which picks the version of a split)."""
    try:
        if method in ("GET", "HEAD"):
            return 200, json.dumps({"model": core.info})
        if method != "POST":
            raise MethodNotAllowed(f"{method} is not supported: POST a JSON request to score")
        return 200, json.dumps(core.predict_body(body, request_id))
    except FunctionError as exc:
        return exc.status, json.dumps(exc.body())


def header(headers: object, name: str) -> str | None:
    """A header by case-insensitive name from a dict (or anything with ``items``)."""
    items = getattr(headers, "items", None)
    if items is None:
        return None
    for key, value in items():
        if str(key).lower() == name:
            return str(value)
    return None
