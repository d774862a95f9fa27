"""Plain HTTP request handling shared by the adapters that receive a body and headers."""

from __future__ import annotations

import json

from functions.core import FunctionCore, FunctionError, MethodNotAllowed

JSON = "application/json"


def respond(core: FunctionCore, method: str, body: bytes | str | None) -> tuple[int, str]:
    """(status, JSON text) for one HTTP request: GET describes the model, POST scores."""
    try:
        if method in ("GET", "HEAD"):
            return 200, json.dumps({"model": core.info})
        if method != "POST":
            raise MethodNotAllowed(f"{method} is not supported: POST a JSON request to score")
        return 200, json.dumps(core.predict_body(body))
    except FunctionError as exc:
        return exc.status, json.dumps(exc.body())
