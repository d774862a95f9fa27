"""schemathesis against the served OpenAPI document: no 5xx, every answer as documented."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from api_support import Api, make_api, seed
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


# schemathesis.pytest.from_fixture fails on pytest 9 (it reads request.node._nodeid), so the
# app is built when the module loads; its data directory goes when the module's tests end.
_DATA = tempfile.TemporaryDirectory(prefix="fleetcast-fuzz-")
API = make_api(Path(_DATA.name), max_json_bytes=64 * 1024)
seed(API)
schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", API.app)


@pytest.fixture(scope="module")
def fuzzed_api() -> Iterator[Api]:
    yield API
    API.repos.close()
    _DATA.cleanup()


def test_the_document_is_openapi_3_1_with_problem_errors(fuzzed_api: Api) -> None:
    doc = fuzzed_api.client.get("/api/v1/openapi.json").json
    assert doc["openapi"] == "3.1.0"
    operation = doc["paths"]["/api/v1/models"]["post"]
    assert operation["security"] == [{"bearer": []}]
    assert set(operation["responses"]) >= {"201", "400", "401", "403", "409", "413", "422"}
    assert list(operation["responses"]["422"]["content"]) == ["application/problem+json"]
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


@schema.parametrize()
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_request_gets_a_5xx_and_every_answer_matches_the_schema(
    case: Any, fuzzed_api: Api
) -> None:
    case.call_and_validate(headers=fuzzed_api.headers("admin"), checks=CHECKS)
