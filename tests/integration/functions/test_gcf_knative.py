"""functions-framework started for real on a loopback port: GCF HTTP and CloudEvent
functions, and the Knative CloudEvents sink in binary and structured mode (the SDK)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent, from_http
from ff_support import FunctionsFramework, http

pytestmark = pytest.mark.integration


@pytest.fixture()
def env(edge_packages: Any, tmp_path: Path) -> dict[str, str]:
    return {
        "FLEETCAST_PACKAGE": str(edge_packages.onnx),
        "FLEETCAST_PUBLIC_KEY": str(edge_packages.public_key),
        "FLEETCAST_OUTBOX_DIR": str(tmp_path / "tmp-fleetcast"),
    }


def _rows(edge_packages: Any, n: int = 2) -> list[list[float]]:
    return [[float(v) for v in row] for row in edge_packages.x[:n]]


def _expected(edge_packages: Any, n: int = 2) -> np.ndarray:
    from edge_agent.runtime import open_model

    model = open_model(edge_packages.onnx, edge_packages.public_key, telemetry=False)
    return next(iter(model.predict({"input": edge_packages.x[:n]}).values()))


def _request(edge_packages: Any, data: Any = None) -> CloudEvent:
    return CloudEvent(
        {"type": "com.example.digits.score", "source": "/tests", "id": "req-1"},
        data if data is not None else {"inputs": {"input": _rows(edge_packages)}},
    )


def test_gcf_http_function(env: dict[str, str], edge_packages: Any, tmp_path: Path) -> None:
    with FunctionsFramework(
        "functions/gcf.py", "predict_http", "http", env, tmp_path / "ff.log"
    ) as ff:
        body = json.dumps({"instances": _rows(edge_packages)}).encode()
        status, headers, reply = http(ff.url, body, {"content-type": "application/json"})
        assert status == 200 and headers["content-type"].startswith("application/json")
        (scores,) = json.loads(reply)["outputs"].values()
        np.testing.assert_allclose(np.asarray(scores), _expected(edge_packages), rtol=1e-5)
        status, _, reply = http(ff.url, b'{"inputs": {"input": [[1, 2]]}}')
        assert status == 422 and "dimension 1 is 2" in json.loads(reply)["detail"]
        status, _, reply = http(ff.url, b"not json")
        assert status == 400 and "not JSON" in json.loads(reply)["detail"]
        status, _, _ = http(ff.url, body, {"content-type": "application/json"})
        assert status == 200  # still warm after the bad requests


def test_gcf_cloudevent_function(env: dict[str, str], edge_packages: Any, tmp_path: Path) -> None:
    with FunctionsFramework(
        "functions/gcf.py", "predict_cloudevent", "cloudevent", env, tmp_path / "ff.log"
    ) as ff:
        headers, body = to_binary(_request(edge_packages))
        status, _, reply = http(ff.url, body, headers)
        assert status == 200, reply
        headers, body = to_structured(_request(edge_packages, {"inputs": {"input": "x"}}))
        status, _, reply = http(ff.url, body, headers)
        assert status == 422 and "input 'input'" in json.loads(reply)["detail"]
        headers, body = to_binary(_request(edge_packages))
        assert http(ff.url, body, headers)[0] == 200
    assert "scored: prediction" in (tmp_path / "ff.log").read_text()


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_knative_cloudevents_sink_replies_with_a_cloudevent(
    env: dict[str, str], edge_packages: Any, tmp_path: Path, mode: str
) -> None:
    convert = to_binary if mode == "binary" else to_structured
    with FunctionsFramework(
        "functions/knative.py", "receive", "http", env, tmp_path / "ff.log"
    ) as ff:
        headers, body = convert(_request(edge_packages))
        status, reply_headers, reply = http(ff.url, body, headers)
        assert status == 200, reply
        if mode == "binary":
            assert reply_headers["ce-type"] == "dev.fleetcast.prediction"
        else:
            assert reply_headers["content-type"].startswith("application/cloudevents+json")
        event = from_http(reply_headers, reply)
        assert event["type"] == "dev.fleetcast.prediction" and event["subject"] == "req-1"
        assert event["source"] == "/fleetcast/digits-mlp/1"
        (scores,) = event.get_data()["outputs"].values()
        np.testing.assert_allclose(np.asarray(scores), _expected(edge_packages), rtol=1e-5)
        # not a CloudEvent, then bad data in a good event: 4xx naming it, still warm
        status, _, reply = http(ff.url, b"{}", {"content-type": "application/json"})
        assert status == 400 and "not a CloudEvent" in json.loads(reply)["detail"]
        headers, body = convert(_request(edge_packages, {"rows": 1}))
        status, _, reply = http(ff.url, body, headers)
        assert status == 400 and 'missing "inputs"' in json.loads(reply)["detail"]
        headers, body = convert(_request(edge_packages))
        assert http(ff.url, body, headers)[0] == 200
