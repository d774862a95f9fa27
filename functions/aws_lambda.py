"""AWS Lambda: ``functions.aws_lambda.handler`` for direct invokes and HTTP events.

- direct invoke (``aws lambda invoke``, Step Functions, SDK): the event IS the
  request (``{"inputs": ...}``); the reply is the prediction, or an error
  object ``{"error", "detail", "status"}`` (the invoke itself succeeds).
- API Gateway REST API (payload format 1.0: ``httpMethod``, ``path``, ``body``),
  HTTP API and function URLs (payload format 2.0: ``version: "2.0"``,
  ``requestContext.http.method``, ``rawPath``): a proxy response with the HTTP
  status, JSON body; ``isBase64Encoded`` bodies are decoded.
  ``GET`` returns the model it serves; ``POST`` scores.

The package is loaded and verified at init (this module's import, Lambda's
init phase) when ``AWS_LAMBDA_FUNCTION_NAME`` is set; elsewhere on first call.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping
from typing import Any

from functions.core import BadRequest, FunctionError, get_core
from functions.http import header, respond

JSON_HEADERS = {"content-type": "application/json"}


def _http(status: int, body: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": dict(JSON_HEADERS),
        "body": json.dumps(body),
        "isBase64Encoded": False,
    }


def _method_and_body(event: Mapping[str, Any]) -> tuple[str, str | bytes | None] | None:
    """(method, body) of an HTTP event (v1 or v2), or None for a direct invoke."""
    if event.get("version") == "2.0" and isinstance(event.get("requestContext"), dict):
        http = event["requestContext"].get("http") or {}
        method = str(http.get("method", "GET")).upper()
    elif "httpMethod" in event and "requestContext" in event:
        method = str(event["httpMethod"]).upper()
    else:
        return None
    body = event.get("body")
    if body is not None and event.get("isBase64Encoded"):
        try:
            body = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise BadRequest(f"isBase64Encoded body is not base64: {exc}") from exc
    return method, body


def handler(event: Any, context: Any = None) -> dict[str, Any]:
    """The Lambda entry point (``Handler: functions.aws_lambda.handler``)."""
    if not isinstance(event, Mapping):
        return FunctionError(f"event must be a JSON object, got {type(event).__name__}").body()
    core = get_core()
    try:
        request = _method_and_body(event)
    except FunctionError as exc:
        return _http(exc.status, exc.body())
    platform_id = getattr(context, "aws_request_id", None)
    if request is None:  # direct invoke
        try:
            return core.predict(event, platform_id)
        except FunctionError as exc:
            return exc.body()
    context_id = (event.get("requestContext") or {}).get("requestId")
    request_id = header(event.get("headers") or {}, "x-request-id") or context_id or platform_id
    status, text = respond(core, *request, request_id)
    return {
        "statusCode": status,
        "headers": dict(JSON_HEADERS),
        "body": text,
        "isBase64Encoded": False,
    }


if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
    get_core()  # init phase: load and verify the package once, before the first invoke
