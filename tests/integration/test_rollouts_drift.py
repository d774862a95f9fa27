"""The drift gate of a rollout reads monitoring's alerts: real telemetry windows in a SQLite
file store, the drift rules of ``AlertService`` evaluated on them, and the rollouts service
asking ``blocks_rollout`` through :class:`AlertDrift` before it promotes a wave."""

from __future__ import annotations

import json
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
from control_plane.services.rollouts import AlertDrift, RolloutService
from control_plane.services.tokens import Principal
from control_plane.store.factory import open_repositories
from control_plane.store.records import ModelCard, NewDevice, Package
from edge_agent.core.telemetry import ModelTelemetry
from tests.unit.control_plane.monitoring_support import monitored_manifest

pytestmark = pytest.mark.integration

OPERATOR = Principal("ops", "operator")


def _rules(model: str) -> tuple[AlertRule, ...]:
    match = (("model", model),)
    return (
        AlertRule("feature_drift", "drift_features", 1, ">=", 900.0, 0.0, "warning", match,
                  gates_rollout=True),
    )  # fmt: skip


def _data(seed: int, shift: float, rows: int = 600) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, (rows, 4)).astype(np.float32)
    x[:, 0] += shift
    e = np.exp(x[:, :3] * 2.0)
    return x, (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("shift", "expected"), [(1.5, "aborted"), (0.0, "completed")])
def test_a_firing_drift_alert_on_the_version_blocks_promotion(
    tmp_path: Path, shift: float, expected: str
) -> None:
    clock = Clock()
    repos = open_repositories(str(tmp_path / "store.db"))
    x, scores = _data(0, 0.0, rows=20_000)  # the reference: the validation split
    manifest = monitored_manifest(x, scores, version="2")
    repos.models.add("digits", "", "ml", 1.0)
    repos.versions.add("digits", "2", ModelCard("digits", "synthetic", "ml"), None, 1.0)
    repos.versions.set_stage("digits", "2", "registered", "compiled", 1.0)
    repos.packages.put(
        Package("b" * 64, manifest.package_id, "digits", "2", manifest.profile.id, 1, 1, "/p",
                manifest.model_dump(mode="json"), 1.0)
    )  # fmt: skip
    profile = manifest.profile.id
    repos.devices.add(NewDevice("cam-1", "h", labels={"site": "lab"}, profile_id=profile), 1.0)
    repos.devices.touch("cam-1", clock())
    audit = AuditService(repos.audit, clock)
    alerts = AlertService(MonitoringService(repos, audit), (), _rules, window_s=900.0)
    service = RolloutService(repos, audit, clock=clock, drift_alerts=AlertDrift(alerts))
    spec = {
        "model": "digits",
        "version": "2",
        "target": {"kind": "devices", "selector": {"site": "lab"}},
        "waves": [{"percent": 100}],
        "bake_s": 60,
        "min_finished": 1,
        "gates": {
            "error_rate": {"enabled": False},
            "latency": {"enabled": False},
            "drift": {"enabled": True},
        },
    }
    rollout = service.create(spec, OPERATOR)
    [deploy] = repos.commands.pending()
    repos.commands.ack(deploy.id, "cam-1", True, {"package_id": manifest.package_id}, clock())
    assert service.tick(rollout.id).waves[0].status == "baking"  # until 1060
    # the device serves version 2 and reports a window of its traffic
    ingest = IngestService(repos, DeviceService(repos), clock=clock)
    telemetry = ModelTelemetry(manifest, clock=clock, seed=0)
    xs, ss = _data(1, shift)
    for i in range(0, 600, 4):
        telemetry.record({"x": xs[i : i + 4]}, {"probs": ss[i : i + 4]}, 0.001)
    clock.now += 100.0  # past the bake
    repos.devices.touch("cam-1", clock())
    window = telemetry.close_window("cam-1", 1)
    assert ingest.ingest("cam-1", [(1, "telemetry_window", json.dumps(window))], "grpc").acked
    checked = alerts.check_drift(clock())
    firing = [t.alert.id for t in checked.transitions if t.alert.state == "firing"]
    assert bool(firing) == (shift > 0)
    after = service.tick(rollout.id)
    assert after.phase == expected, after.reason
    gate: dict[str, Any] = next(g for g in after.waves[0].gates if g["gate"] == "drift")
    if firing:
        assert gate["verdict"] == "fail" and firing[0] in gate["reason"]
        assert gate["numbers"]["firing_alerts"] == 1
        assert [c.kind for c in repos.commands.pending()] == ["rollback"]
    else:
        assert gate["verdict"] == "pass" and gate["numbers"]["firing_alerts"] == 0
    repos.close()
