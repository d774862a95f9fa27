"""The Lambda handler driven with the events AWS sends (fixtures of the real shapes)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from functions.aws_lambda import handler

EVENTS = Path(__file__).parent / "events"


def _event(name: str, body: Any, *, b64: bool = False) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / name).read_text())
    text = body if isinstance(body, str) else json.dumps(body)
    event["body"] = base64.b64encode(text.encode()).decode() if b64 else text
    event["isBase64Encoded"] = b64
    return event


def _rows(edge_packages: Any, n: int = 3) -> list[list[float]]:
    return [[float(v) for v in row] for row in edge_packages.x[:n]]


def _expected(edge_packages: Any, n: int = 3) -> np.ndarray:
    from edge_agent.runtime import open_model

    model = open_model(edge_packages.onnx, edge_packages.public_key, telemetry=False)
    (scores,) = model.predict({"input": edge_packages.x[:n]}).values()
    return scores


@pytest.mark.parametrize(
    ("name", "b64"),
    [("apigw_rest_v1.json", False), ("apigw_http_v2.json", True), ("function_url.json", False)],
)
def test_http_events_score_like_the_runtime(
    function_env: dict[str, str], edge_packages: Any, name: str, b64: bool
) -> None:
    reply = handler(_event(name, {"inputs": {"input": _rows(edge_packages)}}, b64=b64), None)
    assert reply["statusCode"] == 200
    assert reply["headers"]["content-type"] == "application/json"
    body = json.loads(reply["body"])
    (scores,) = body["outputs"].values()
    np.testing.assert_allclose(np.asarray(scores), _expected(edge_packages), rtol=1e-5)
    assert body["prediction_id"] and body["model"]["name"] == "digits-mlp"


def test_direct_invoke_returns_the_prediction(
    function_env: dict[str, str], edge_packages: Any
) -> None:
    reply = handler({"instances": _rows(edge_packages, 2)}, None)
    (scores,) = reply["outputs"].values()
    np.testing.assert_allclose(np.asarray(scores), _expected(edge_packages, 2), rtol=1e-5)


@pytest.mark.parametrize(
    ("body", "status", "names"),
    [
        ("{not json", 400, "not JSON"),
        ("", 400, "empty body"),
        ({"rows": []}, 400, 'missing "inputs"'),
        ({"inputs": {"input": [[1.0, 2.0]]}}, 422, "dimension 1 is 2"),
        ({"inputs": {"image": [[0.0] * 64]}}, 422, "unknown inputs ['image']"),
        ({"inputs": {"input": [[0.0] * 63 + ["x"]]}}, 422, "input 'input'"),
        ({"inputs": {"input": [[float("nan")] * 64]}}, 422, "NaN"),
    ],
)
def test_bad_requests_get_a_4xx_naming_the_problem_and_the_container_stays_warm(
    function_env: dict[str, str], edge_packages: Any, body: Any, status: int, names: str
) -> None:
    from functions.core import get_core

    core = get_core()
    text = body if isinstance(body, str) else json.dumps(body).replace("NaN", "NaN")
    for name in ("apigw_rest_v1.json", "apigw_http_v2.json", "function_url.json"):
        reply = handler(_event(name, text), None)
        assert reply["statusCode"] == status, reply
        error = json.loads(reply["body"])
        assert names in error["detail"] and error["status"] == status
    direct = handler(body if isinstance(body, dict) else {"inputs": "nope"}, None)
    assert 400 <= direct["status"] < 500 and direct["detail"]
    assert get_core() is core  # still warm: the same verified model serves the next call
    ok = handler(_event("function_url.json", {"instances": _rows(edge_packages, 1)}), None)
    assert ok["statusCode"] == 200


def test_methods_and_bad_base64(function_env: dict[str, str]) -> None:
    event = _event("apigw_http_v2.json", "")
    event["requestContext"]["http"]["method"] = "GET"
    described = handler(event, None)
    assert described["statusCode"] == 200
    assert json.loads(described["body"])["model"]["name"] == "digits-mlp"
    event["requestContext"]["http"]["method"] = "DELETE"
    assert handler(event, None)["statusCode"] == 405
    event = _event("apigw_rest_v1.json", "")
    event["body"], event["isBase64Encoded"] = "%%%not-base64", True
    reply = handler(event, None)
    assert reply["statusCode"] == 400 and "base64" in json.loads(reply["body"])["detail"]


def test_a_package_that_fails_a_check_fails_init_naming_it(
    function_env: dict[str, str], edge_packages: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge_agent.errors import PackageError
    from functions.core import get_core, reset_core

    reset_core()
    monkeypatch.setenv("FLEETCAST_PACKAGE", str(edge_packages.wrong_profile()))
    with pytest.raises(PackageError, match="profile"):
        get_core()
    reset_core()
    monkeypatch.setenv("FLEETCAST_PACKAGE", str(edge_packages.bad_vectors()))
    with pytest.raises(PackageError, match="selftest"):
        get_core()
