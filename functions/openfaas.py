"""OpenFaaS ``python3-http`` template: ``handler.handle(event, context)``.

The template passes ``event`` with ``body`` (bytes), ``headers``, ``method``,
``query`` and ``path``, and expects ``{"statusCode", "body", "headers"}`` back.
The build context's ``function/handler.py`` re-exports :func:`handle`.
"""

from __future__ import annotations

from typing import Any

from functions.core import get_core
from functions.http import JSON, header, respond


def handle(event: Any, context: Any = None) -> dict[str, Any]:
    method = str(getattr(event, "method", "POST")).upper()
    headers = getattr(event, "headers", None) or {}
    request_id = header(headers, "x-request-id") or header(headers, "x-call-id")
    status, text = respond(get_core(), method, getattr(event, "body", None), request_id)
    return {"statusCode": status, "body": text, "headers": {"Content-Type": JSON}}
