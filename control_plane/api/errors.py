"""Every error the API answers, as RFC 7807 ``application/problem+json``, mapped here once.

Domain errors (``control_plane.errors``) map by class; werkzeug's HTTP errors
(404 route, 405, 413 body too large, 400 malformed JSON) keep their status;
pydantic validation of a request is a 422 listing each field; anything else is
a 500 whose detail says nothing about the internals (the log has the trace).
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, json, request
from pydantic import BaseModel, ConfigDict, ValidationError
from werkzeug.exceptions import HTTPException

from control_plane.errors import (
    CompileError,
    Conflict,
    ControlPlaneError,
    InvalidInput,
    LifecycleError,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)

logger = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://fleetcast.dev/problems/"

HTTP_STATUS: dict[type[ControlPlaneError], int] = {
    InvalidInput: 400,
    Unauthenticated: 401,
    PermissionDenied: 403,
    NotFound: 404,
    Conflict: 409,
    CompileError: 422,
    ResourceExhausted: 429,
    Unavailable: 503,
}

TITLES = {
    400: "Bad request",
    401: "Unauthenticated",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "Unprocessable request",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
}


class Problem(BaseModel):
    """An RFC 7807 problem; ``errors`` lists the fields of a 422, ``transition`` a 409 move."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    instance: str
    errors: list[dict[str, Any]] | None = None


def status_of(exc: ControlPlaneError) -> int:
    for cls in type(exc).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return 500


def problem(status: int, detail: str, **extra: Any) -> Response:
    title = TITLES.get(status, "Error")
    body = {
        "type": TYPE_BASE + title.lower().replace(" ", "-"),
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.path,
        **extra,
    }
    response = Response(json.dumps(body), status=status, mimetype=PROBLEM_JSON)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="fleetcast"'
    return response


def validation_problem(exc: ValidationError) -> Response:
    """flask-openapi3's callback for a request that fails its pydantic model."""
    errors = [
        {"loc": [str(part) for part in e["loc"]], "msg": e["msg"], "type": e["type"]}
        for e in exc.errors(include_url=False, include_input=False)
    ]
    fields = ", ".join(".".join(e["loc"]) or "body" for e in errors)
    return problem(422, f"the request does not match its schema ({fields})", errors=errors)


def _domain(exc: ControlPlaneError) -> Response:
    status = status_of(exc)
    if status >= 500:
        logger.warning("%s: %s", request.path, exc)
    extra: dict[str, Any] = {}
    if isinstance(exc, LifecycleError):
        extra["transition"] = {"from": exc.current, "to": exc.target}
    devices = getattr(exc, "devices", None)  # VersionInUse: the devices still running it
    if isinstance(devices, dict):
        extra["devices"] = sorted(devices)
    return problem(status, str(exc), **extra)


def _http(exc: HTTPException) -> Response:
    status = exc.code or 500
    if status == 413:
        limit = request.max_content_length
        return problem(413, f"the request body is larger than {limit} bytes")
    return problem(status, exc.description or TITLES.get(status, "Error"))


def _unexpected(exc: Exception) -> Response:
    logger.exception("%s %s failed", request.method, request.path)
    return problem(500, "the server failed to answer this request; the log has the details")


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(ControlPlaneError, _domain)
    app.register_error_handler(HTTPException, _http)
    app.register_error_handler(Exception, _unexpected)
