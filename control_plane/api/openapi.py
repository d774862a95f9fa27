"""The served OpenAPI 3.1 document: flask-openapi3's, with every error as problem+json.

flask-openapi3 writes paths, parameters and bodies from the pydantic models of
each view; this adds what the views cannot say one by one: the bearer scheme's
answers (401/403), the problems any route may answer (400, 404, 409, 413,
422, 503), all as ``application/problem+json`` with the ``Problem`` schema.
"""

from __future__ import annotations

import copy
from typing import Any

from control_plane.api.errors import PROBLEM_JSON, TITLES

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
ALWAYS = (400, 404, 422, 503)
WITH_BODY = (409, 413)
AUTH = (401, 403)
METHODS = ("get", "put", "post", "delete", "patch")


def problem_document(spec: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(spec)
    for item in doc.get("paths", {}).values():
        for method in METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            responses = operation.setdefault("responses", {})
            codes = list(ALWAYS)
            if method != "get":
                codes += WITH_BODY
            if operation.get("security"):
                codes += AUTH
            for code in codes:
                responses[str(code)] = _problem_response(code)
            for code, response in list(responses.items()):
                if code.isdigit() and int(code) >= 400:
                    responses[code] = _problem_response(int(code))
                elif code == "204":
                    response.pop("content", None)
    return doc


def _problem_response(code: int) -> dict[str, Any]:
    return {
        "description": TITLES.get(code, "Error"),
        "content": {PROBLEM_JSON: {"schema": PROBLEM_REF}},
    }
