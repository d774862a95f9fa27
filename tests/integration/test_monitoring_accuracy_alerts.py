"""Accuracy alerts from delayed labels on the compiled digits MLP: wrong labels make the
measured accuracy drop, the default ``accuracy_drop`` rule fires and a retraining request
reaches a real local HTTP server; true labels keep it quiet, and too few labels give no
reading at all (the minimum-count guard)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from control_plane.core.alerts import LabelGuards
from control_plane.services.alerts import AlertService, Notifications
from control_plane.services.audit import AuditService
from control_plane.services.devices import DeviceService
from control_plane.services.ingest import IngestService
from control_plane.services.monitoring import MonitoringService
from control_plane.services.packages import PackageService
from control_plane.signing import load_fleet_public_key
from control_plane.store.factory import open_repositories
from control_plane.store.records import FeedbackLabel, NewDevice
from edge_agent.core.telemetry import TelemetryConfig
from edge_agent.runtime import open_model

pytestmark = pytest.mark.integration


@pytest.fixture
def hook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()
    server.server_close()


def test_wrong_labels_fire_the_accuracy_alert_and_request_retraining(
    tmp_path: Path, package: Path, keys: Any, digits_mlp: Any, hook: Any
) -> None:
    url, received = hook
    repos = open_repositories(str(tmp_path / "store.db"))
    PackageService(repos, load_fleet_public_key(keys.public), tmp_path / "catalog").register(
        package, "test"
    )
    repos.devices.add(NewDevice("cam-1", "h"), at=time.time())
    model = open_model(package, keys.public, telemetry=TelemetryConfig(1.0, max_captures=500))
    manifest = model.manifest
    name, version = manifest.model_name, manifest.model_version
    assert manifest.calibration is not None  # the reference accuracy the drop is measured from
    x = np.asarray(digits_mlp.x_validation, dtype=np.float32)
    y = np.asarray(digits_mlp.y_validation).astype(int)
    input_name = manifest.signature.inputs[0].name
    ids = [model.predict_with_id({input_name: x[i : i + 1]})[1] for i in range(len(x))]
    window = json.dumps(model.telemetry.close_window("cam-1", 1))
    ingest = IngestService(repos, DeviceService(repos))
    assert ingest.ingest("cam-1", [(1, "telemetry_window", window)], "grpc").acked == [1]

    audit = AuditService(repos.audit)
    monitoring = MonitoringService(repos, audit)
    guards = LabelGuards(min_labelled=200, min_estimated=100)
    alerts = AlertService(
        monitoring, notifications=Notifications(webhooks=(url,)), audit=audit, guards=guards
    )

    def label(values: Any, count: int, at: float) -> None:
        pairs = zip(ids[:count], values[:count], strict=True)
        repos.monitoring.put_feedback([FeedbackLabel(p, float(v), at, "test") for p, v in pairs])

    def accuracy_alerts() -> list[Any]:
        return [a for a in alerts.alerts() if a.rule.metric == "accuracy_drop"]

    # thin data: 100 wrong labels are below the guard: no reading, nothing fires
    wrong = (y + 1) % 10
    label(wrong, 100, time.time())
    alerts.evaluate(time.time())
    assert accuracy_alerts() == [] and received == []

    # true labels on every prediction: measured accuracy equals the reference, quiet
    label(y, len(y), time.time())
    now = time.time()
    summary = monitoring.label_summary(name, version, since=now - 86400, recent_since=now - 900)
    assert summary is not None and summary["labelled"] == len(y) >= guards.min_labelled
    assert summary["accuracy"] == pytest.approx(manifest.calibration.accuracy, abs=0.01)
    assert summary["recent_captures"] == len(y)  # the estimate has its reading too
    quiet = alerts.evaluate(now)
    assert quiet.readings >= 4 and accuracy_alerts() == []
    assert not [b for b in received if b.get("kind") == "retraining_request"]

    # a third of the labels say the model was wrong: accuracy falls, the alert fires at once
    third = len(y) // 3
    label(np.concatenate([wrong[:third], y[third:]]), len(y), time.time())
    fired = alerts.evaluate(time.time())
    (alert,) = accuracy_alerts()
    assert alert.state == "firing" and alert.value > 0.25
    assert dict(alert.labels) == {"model": name, "version": version, "group": "all"}
    assert {(d.kind, d.ok) for d in fired.deliveries} >= {("alert", True)}
    requests = [b for b in received if b["kind"] == "retraining_request"]
    (request,) = requests
    assert (request["model"], request["version"]) == (name, version)
    assert request["alert"]["rule"] == "accuracy_drop"
    evidence = request["evidence"]
    assert evidence["labelled"] == len(y)
    assert evidence["reference_accuracy"] == pytest.approx(manifest.calibration.accuracy)
    assert evidence["accuracy"] < evidence["reference_accuracy"] - 0.25
    assert request["samples"]["table"] == "captures"
    assert request["samples"]["accuracy"] == f"/api/v1/accuracy?model={name}&version={version}"
    # the firing accuracy alert gates the version's rollout
    assert [a.rule.name for a in alerts.blocks_rollout(name, version)] == ["accuracy_drop"]

    # corrected labels: the drop is gone, the alert resolves
    label(y, len(y), time.time())
    alerts.evaluate(time.time())
    assert [a.state for a in accuracy_alerts()] == ["resolved"]
