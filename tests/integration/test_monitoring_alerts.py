"""Drift alerts end to end: real telemetry windows in a SQLite file store, the drift rules
fire and resolve, and the transitions reach a real local HTTP webhook (plus a dead one)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from control_plane.core.alerts import AlertRule
from control_plane.services.alerts import AlertService
from control_plane.services.audit import AuditService
from control_plane.services.devices import DeviceService
from control_plane.services.ingest import IngestService
from control_plane.services.monitoring import MonitoringService
from control_plane.store.factory import open_repositories
from control_plane.store.records import NewDevice, Package
from edge_agent.core.telemetry import ModelTelemetry
from tests.unit.control_plane.monitoring_support import monitored_manifest

pytestmark = pytest.mark.integration


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            length = int(self.headers["Content-Length"])
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()
    server.server_close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rules(model: str) -> tuple[AlertRule, ...]:
    match = (("model", model),)
    return (
        AlertRule("feature_drift", "drift_features", 1, ">=", 900.0, 0.0, "warning", match,
                  retrain=True, gates_rollout=True),
        AlertRule("error_rate", "error_rate", 0.05, ">", 900.0, 0.0, "critical", match),
    )  # fmt: skip


def _data(seed: int, shift: float, rows: int = 600) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, (rows, 4)).astype(np.float32)
    x[:, 0] += shift
    e = np.exp(x[:, :3] * 2.0)
    return x, (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def test_drift_alert_fires_posts_a_retraining_request_and_resolves(
    tmp_path: Path, webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    url, received = webhook
    dead = f"http://127.0.0.1:{_closed_port()}/hook"
    repos = open_repositories(str(tmp_path / "store.db"))
    x, scores = _data(0, 0.0, rows=20_000)  # the reference: the validation split
    manifest = monitored_manifest(x, scores)
    repos.packages.put(
        Package("b" * 64, manifest.package_id, "digits", "1", manifest.profile.id, 1, 1, "/p",
                manifest.model_dump(mode="json"), 1.0)
    )  # fmt: skip
    repos.devices.add(NewDevice("cam-1", "h"), at=1.0)
    ingest = IngestService(repos, DeviceService(repos))
    now = [1000.0]
    telemetry = ModelTelemetry(manifest, clock=lambda: now[0], seed=0)
    for seq, shift in ((1, 0.0), (2, 1.5), (3, 0.0)):  # windows at 1000, 2000, 3000
        xs, ss = _data(seq, shift)
        for i in range(0, 600, 4):
            telemetry.record({"x": xs[i : i + 4]}, {"probs": ss[i : i + 4]}, 0.001)
        now[0] += 1000.0
        window = telemetry.close_window("cam-1", seq)
        assert ingest.ingest("cam-1", [(seq, "telemetry_window", json.dumps(window))], "grpc").acked

    alerts = AlertService(
        MonitoringService(repos, AuditService(repos.audit)), [url, dead], _rules, window_s=900.0
    )
    quiet = alerts.check_drift(1500.0)  # the clean window only
    # drift_features, drift_share, error_rate (one package) and silent_device_share
    assert quiet.readings == 4 and quiet.transitions == () and received == []

    fired = alerts.check_drift(2500.0)  # the shifted window
    assert [(t.previous, t.alert.state) for t in fired.transitions] == [
        (None, "pending"),
        ("pending", "firing"),
    ]
    assert [(d.url, d.kind, d.ok) for d in fired.deliveries] == [
        (url, "alert", True),
        (url, "retraining_request", True),
        (dead, "alert", False),
        (dead, "retraining_request", False),
    ]
    assert fired.deliveries[2].error  # the refusal, reported
    alert, request = received
    assert (alert["kind"], alert["state"], alert["rule"]) == ("alert", "firing", "feature_drift")
    assert alert["labels"]["version"] == "1" and alert["value"] >= 1
    assert request["kind"] == "retraining_request" and request["model"] == "digits"
    assert "x/x[0]" in request["evidence"]["drifted"]
    assert request["samples"]["table"] == "captures"
    (blocking,) = alerts.blocks_rollout("digits", "1")
    assert blocking.rule.name == "feature_drift" and alerts.blocks_rollout("digits", "2") == []

    resolved = alerts.check_drift(3500.0)  # clean again
    assert [(t.previous, t.alert.state) for t in resolved.transitions] == [("firing", "resolved")]
    assert received[-1]["state"] == "resolved" and len(received) == 3
    assert alerts.blocks_rollout("digits", "1") == []
    assert [a.state for a in alerts.alerts()] == ["resolved"]
    repos.close()


def test_the_alert_routes_evaluate_recent_windows_with_the_default_rules(
    tmp_path: Path, webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    from control_plane.api import ApiOptions, create_api
    from control_plane.services.tokens import Principal, TokenService
    from control_plane.settings import Settings

    url, received = webhook
    repos = open_repositories(str(tmp_path / "store.db"))
    app = create_api(repos, Settings(data_dir=tmp_path / "cp"), ApiOptions(alert_webhooks=(url,)))
    tokens = TokenService(repos, app.extensions["fleetcast.api"].audit)
    _, secret = tokens.create("ops", "operator", Principal("test", "admin"))
    auth = {"Authorization": f"Bearer {secret}"}
    x, scores = _data(0, 0.0, rows=20_000)
    manifest = monitored_manifest(x, scores)
    repos.packages.put(
        Package("c" * 64, manifest.package_id, "digits", "1", manifest.profile.id, 1, 1, "/p",
                manifest.model_dump(mode="json"), 1.0)
    )  # fmt: skip
    repos.devices.add(NewDevice("cam-1", "h"), at=1.0)
    telemetry = ModelTelemetry(manifest, seed=0)  # the wall clock: a window of just now
    xs, ss = _data(5, 1.5)
    for i in range(0, 600, 4):
        telemetry.record({"x": xs[i : i + 4]}, {"probs": ss[i : i + 4]}, 0.001)
    window = json.dumps(telemetry.close_window("cam-1", 1))
    IngestService(repos, DeviceService(repos)).ingest(
        "cam-1", [(1, "telemetry_window", window)], "grpc"
    )

    client = app.test_client()
    answer = client.post("/api/v1/alerts/evaluate", headers=auth)
    assert answer.status_code == 200, answer.json
    # default rules: feature drift must last 2 windows, dataset drift one: pending, not told
    assert answer.json["readings"] == 4  # drift features and share, error rate, silence
    assert {t["state"] for t in answer.json["transitions"]} == {"pending"}
    assert "feature_drift" in {t["rule"] for t in answer.json["transitions"]}
    assert answer.json["deliveries"] == [] and received == []
    listed = client.get("/api/v1/alerts", headers=auth).json["items"]
    assert {a["rule"] for a in listed} == {t["rule"] for t in answer.json["transitions"]}
    (entry,) = repos.audit.list(action="alerts.evaluate").items
    assert entry.actor == "ops" and entry.detail["readings"] == 4
    repos.close()
