"""Stored alert rules change what fires: real telemetry windows ingested into a SQLite file
store, evaluated by AlertService with the default rules overlaid by an operator's rules."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from control_plane.services.alerts import AlertService
from control_plane.services.audit import AuditService
from control_plane.services.devices import DeviceService
from control_plane.services.ingest import IngestService
from control_plane.services.monitoring import MonitoringService
from control_plane.services.tokens import Principal
from control_plane.store.factory import open_repositories
from control_plane.store.records import NewDevice, Package
from control_plane.store.sql.store import SqlRepositories
from edge_agent.core.telemetry import ModelTelemetry
from tests.unit.control_plane.monitoring_support import monitored_manifest

pytestmark = pytest.mark.integration

OPS = Principal("ops", "operator")


def _data(seed: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, (rows, 4)).astype(np.float32)
    e = np.exp(x[:, :3] * 2.0)
    return x, (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def _store_with_a_window(tmp_path: Path, failures: int) -> SqlRepositories:
    """digits 1 registered, its package, and one window from cam-1 at t=1000..2000 of
    150 clean calls (no drift) and ``failures`` failed ones."""
    repos = open_repositories(str(tmp_path / "store.db"))
    repos.models.add("digits", "", "ml", 1.0)
    x, scores = _data(0, 20_000)
    manifest = monitored_manifest(x, scores)
    repos.packages.put(
        Package("b" * 64, manifest.package_id, "digits", "1", manifest.profile.id, 1, 1, "/p",
                manifest.model_dump(mode="json"), 1.0)
    )  # fmt: skip
    repos.devices.add(NewDevice("cam-1", "h"), at=1.0)
    now = [1000.0]
    telemetry = ModelTelemetry(manifest, clock=lambda: now[0], seed=0)
    xs, ss = _data(1, 600)
    for i in range(0, 600, 4):
        telemetry.record({"x": xs[i : i + 4]}, {"probs": ss[i : i + 4]}, 0.001)
    for _ in range(failures):
        telemetry.record_failure("error", 0.001)
    now[0] += 1000.0
    window = json.dumps(telemetry.close_window("cam-1", 1))
    ingest = IngestService(repos, DeviceService(repos))
    assert ingest.ingest("cam-1", [(1, "telemetry_window", window)], "grpc").acked
    return repos


def _fired(alerts: AlertService, now: float) -> list[tuple[str, str | None, str]]:
    """The transitions of the rules on ``error_rate`` (cam-1 never reported its status, so
    the default silent_devices rule goes pending too: not what these tests are about)."""
    transitions = alerts.evaluate(now).transitions
    return [
        (t.alert.rule.name, t.previous, t.alert.state)
        for t in transitions
        if t.alert.rule.metric == "error_rate"
    ]


def test_a_stored_threshold_fires_where_the_default_does_not_and_disabling_resolves(
    tmp_path: Path,
) -> None:
    repos = _store_with_a_window(tmp_path, failures=3)  # error rate 3/153 = 0.0196
    alerts = AlertService(MonitoringService(repos, AuditService(repos.audit)))  # default rules
    assert _fired(alerts, 1500.0) == []  # 0.0196 is under the default 0.05
    assert repos.alerts.list(rule="error_rate").items == []

    alerts.rules.set("digits", "error_rate", {"threshold": 0.01, "for_s": 0.0}, True, OPS)
    assert _fired(alerts, 1510.0) == [
        ("error_rate", None, "pending"),
        ("error_rate", "pending", "firing"),
    ]
    (firing,) = alerts.repos.alerts.list(state="firing").items
    assert firing.alert.rule.threshold == 0.01 and firing.alert.rule.severity == "critical"
    assert firing.alert.value == pytest.approx(3 / 153)
    assert [a.rule.name for a in alerts.blocks_rollout("digits", "1")] == ["error_rate"]

    # changed while firing: the live alert is held to the rule as it is now (and so stored)
    milder = {"threshold": 0.01, "for_s": 0.0, "severity": "warning", "gates_rollout": False}
    alerts.rules.set("digits", "error_rate", milder, True, OPS)
    assert _fired(alerts, 1515.0) == []  # still breaching: still firing, nothing new to tell
    (firing,) = repos.alerts.list(state="firing").items
    assert (firing.alert.rule.severity, firing.alert.rule.gates_rollout) == ("warning", False)
    counts = {k: n for k, n in repos.alerts.counts().items() if k[0] == "error_rate"}
    assert counts == {("error_rate", "warning", "firing"): 1}  # the metrics' severity label
    assert alerts.blocks_rollout("digits", "1") == []  # the gate lifted with the rule

    # the operator disables the rule: the firing alert resolves, and nothing fires again
    alerts.rules.set("digits", "error_rate", {}, False, OPS)
    assert _fired(alerts, 1520.0) == [("error_rate", "firing", "resolved")]
    assert _fired(alerts, 1530.0) == []
    assert alerts.blocks_rollout("digits", "1") == []
    assert repos.alerts.list(state="firing").items == []

    # enabled again with the stored threshold: it fires again on the same window
    alerts.rules.set("digits", "error_rate", {"threshold": 0.01, "for_s": 0.0}, True, OPS)
    assert [s for _, _, s in _fired(alerts, 1540.0)] == ["pending", "firing"]
    # deleted: back to the default threshold, under which the reading is no breach
    alerts.rules.delete("digits", "error_rate", OPS)
    assert _fired(alerts, 1550.0) == [("error_rate", "firing", "resolved")]
    actions = [e.action for e in repos.audit.list(limit=10).items]
    assert actions.count("alert_rule.set") == 4 and actions.count("alert_rule.delete") == 1
    repos.close()


def test_a_disabled_default_stops_firing_and_an_added_rule_fires(tmp_path: Path) -> None:
    repos = _store_with_a_window(tmp_path, failures=30)  # error rate 30/180 = 0.167
    alerts = AlertService(MonitoringService(repos, AuditService(repos.audit)))
    # the defaults: error_rate > 0.05 for 300 s fires
    assert _fired(alerts, 1500.0) == [("error_rate", None, "pending")]
    assert _fired(alerts, 1850.0) == [("error_rate", "pending", "firing")]
    assert [a.rule.name for a in alerts.blocks_rollout("digits", "1")] == ["error_rate"]

    # the operator turns the default off and adds a rule on the same reading (info)
    alerts.rules.set("digits", "error_rate", {}, False, OPS)
    added = {"metric": "error_rate", "threshold": 0.1, "for_s": 0.0, "severity": "info"}
    alerts.rules.set("digits", "error_budget", added, True, OPS)
    assert sorted(_fired(alerts, 1860.0), key=lambda t: (t[0], t[2])) == [
        ("error_budget", "pending", "firing"),
        ("error_budget", None, "pending"),
        ("error_rate", "firing", "resolved"),
    ]
    assert _fired(alerts, 1870.0) == []  # the breach goes on; the disabled default is quiet
    (firing,) = repos.alerts.list(state="firing", rule="error_budget").items
    assert firing.alert.rule.severity == "info"
    assert repos.alerts.list(state="firing", rule="error_rate").items == []
    assert alerts.blocks_rollout("digits", "1") == []  # an added rule gates nothing by default

    # a deleted added rule: its alert ends, though the breach goes on
    alerts.rules.delete("digits", "error_budget", OPS)
    assert _fired(alerts, 1880.0) == [("error_budget", "firing", "resolved")]
    repos.close()
