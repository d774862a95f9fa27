"""Alerts that live in the store: persisted across restarts, acknowledged through the API,
notified by webhook (retried with backoff, failures kept visible) and by e-mail through a real
local SMTP server (aiosmtpd), device silence as a metric, and the serve timer doing it alone."""

from __future__ import annotations

import email
import json
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiosmtpd.controller import Controller
from prometheus_client.parser import text_string_to_metric_families

from control_plane.core.alerts import AlertRule
from control_plane.core.rollout_gates import DriftGate, GateInput, VersionStats, WaveReadings
from control_plane.core.rollout_spec import DriftGateConfig
from control_plane.monitoring.metrics import MonitoringMetrics
from control_plane.services.alerts import AlertService, Notifications, SmtpConfig, WaveDrift
from control_plane.services.audit import AuditService
from control_plane.services.devices import DeviceService
from control_plane.services.ingest import IngestService
from control_plane.services.monitoring import MonitoringService
from control_plane.services.tokens import Principal, TokenService
from control_plane.store.factory import open_repositories
from control_plane.store.records import NewDevice, Package
from control_plane.store.sql.store import SqlRepositories
from edge_agent.core.telemetry import ModelTelemetry
from tests.unit.control_plane.monitoring_support import monitored_manifest

pytestmark = pytest.mark.integration


@dataclass
class Hook:
    url: str
    received: list[dict[str, Any]] = field(default_factory=list)
    fail_first: int = 0  # answer 500 to this many requests first
    calls: int = 0


@pytest.fixture
def hook() -> Iterator[Hook]:
    state = Hook("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.calls += 1
            if state.calls <= state.fail_first:
                self.send_response(500)
            else:
                state.received.append(body)
                self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    yield state
    server.shutdown()
    server.server_close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[email.message.Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        message = email.message_from_bytes(envelope.content)
        message["X-Rcpt"] = ",".join(envelope.rcpt_tos)
        self.messages.append(message)
        return "250 OK"


def _body(message: email.message.Message) -> Any:
    payload = message.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return json.loads(payload)


@pytest.fixture
def smtp() -> Iterator[tuple[int, Mailbox]]:
    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=_free_port())
    controller.start()
    yield controller.port, box
    controller.stop()


def _rules(model: str) -> tuple[AlertRule, ...]:
    match = (("model", model),)
    return (
        AlertRule("feature_drift", "drift_features", 1, ">=", 900.0, 0.0, "warning", match,
                  retrain=True, gates_rollout=True),
        AlertRule("silent_devices", "silent_device_share", 0.1, ">", 900.0, 0.0, "warning",
                  match),
    )  # fmt: skip


def _data(seed: int, shift: float, rows: int = 600) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, (rows, 4)).astype(np.float32)
    x[:, 0] += shift
    e = np.exp(x[:, :3] * 2.0)
    return x, (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def _fleet(repos: SqlRepositories, devices: tuple[str, ...] = ("cam-1",)) -> Any:
    x, scores = _data(0, 0.0, rows=20_000)
    manifest = monitored_manifest(x, scores)
    repos.packages.put(
        Package("e" * 64, manifest.package_id, "digits", "1", manifest.profile.id, 1, 1, "/p",
                manifest.model_dump(mode="json"), 1.0)
    )  # fmt: skip
    for device in devices:
        repos.devices.add(NewDevice(device, "h"), at=1.0)
    return manifest


def _send_windows(
    repos: SqlRepositories,
    manifest: Any,
    device: str,
    shifts: tuple[float, ...],
    start: float,
    first_seq: int = 1,
) -> None:
    """One window per shift, started 1000 s apart from ``start``, ingested from ``device``."""
    now = [start]
    telemetry = ModelTelemetry(manifest, clock=lambda: now[0], seed=0)
    ingest = IngestService(repos, DeviceService(repos))
    for seq, shift in enumerate(shifts, start=first_seq):
        xs, ss = _data(seq, shift)
        for i in range(0, 600, 4):
            telemetry.record({"x": xs[i : i + 4]}, {"probs": ss[i : i + 4]}, 0.001)
        now[0] += 1000.0
        window = json.dumps(telemetry.close_window(device, seq))
        assert ingest.ingest(device, [(seq, "telemetry_window", window)], "grpc").acked


def _service(
    repos: SqlRepositories, notifications: Notifications, clock: Callable[[], float] = time.time
) -> AlertService:
    audit = AuditService(repos.audit, clock)
    return AlertService(
        MonitoringService(repos, audit, clock=clock),
        rules_for=_rules,
        notifications=notifications,
        audit=audit,
    )


def _drift_gate(measured: tuple[float, int] | None) -> str:
    assert measured is not None
    readings = WaveReadings(
        at=1.0, new=VersionStats(1, 0), drift_score=measured[0], drift_samples=measured[1]
    )
    config = DriftGateConfig(enabled=True, max_score=0.2, min_samples=100)
    return DriftGate(config).evaluate(GateInput(now=1.0, readings=readings)).verdict


def test_alerts_outlive_the_process_and_are_acknowledged_through_the_api(
    tmp_path: Path, hook: Hook
) -> None:
    from control_plane.api import ApiOptions, create_api
    from control_plane.settings import Settings

    path = str(tmp_path / "store.db")
    repos = open_repositories(path)
    manifest = _fleet(repos)
    _send_windows(repos, manifest, "cam-1", (1.5, 0.0), start=1000.0)  # windows at 1000, 2000
    repos.devices.record_activity({"cam-1": 1500.0})
    fired = _service(repos, Notifications((hook.url,))).evaluate(1500.0)
    assert [t.alert.state for t in fired.transitions] == ["pending", "firing"]
    alert_id = fired.deliveries[0].alert_id
    repos.close()

    # a new process: the alert is read back from the store
    repos = open_repositories(path)
    app = create_api(repos, Settings(data_dir=tmp_path / "cp"), ApiOptions())
    tokens = TokenService(repos, app.extensions["fleetcast.api"].audit)
    admin = Principal("test", "admin")
    ops = {"Authorization": f"Bearer {tokens.create('ops', 'operator', admin)[1]}"}
    viewer = {"Authorization": f"Bearer {tokens.create('eve', 'viewer', admin)[1]}"}
    client = app.test_client()
    listed = client.get("/api/v1/alerts?state=firing&model=digits", headers=viewer).json
    (item,) = listed["items"]
    assert (item["id"], item["rule"], item["acknowledged_by"]) == (alert_id, "feature_drift", None)
    assert listed["next"] is None
    assert client.get("/api/v1/alerts?state=resolved", headers=viewer).json["items"] == []
    assert client.get("/api/v1/alerts?state=open", headers=viewer).status_code == 422

    url = f"/api/v1/alerts/{alert_id}/acknowledge"
    assert client.post(url, headers=viewer).status_code == 403
    acked = client.post(url, headers=ops)
    assert acked.status_code == 200, acked.json
    assert acked.json["acknowledged_by"] == "ops" and acked.json["state"] == "firing"
    (entry,) = repos.audit.list(action="alert.acknowledge").items
    assert entry.actor == "ops" and entry.subject == f"alert:{alert_id}"
    assert entry.after == {"acknowledged_by": "ops"}
    assert client.post("/api/v1/alerts/al-unknown/acknowledge", headers=ops).status_code == 404

    # the rollout gate reads the store: any process sees the blocking alert
    later = _service(repos, Notifications((hook.url,)))
    assert [a.rule.name for a in later.blocks_rollout("digits", "1")] == ["feature_drift"]
    # ... and so does the rollout drift gate (WindowReadings asks WaveDrift for its score)
    wave = WaveDrift(later)
    assert wave.drift("digits", "1", ["cam-1"], since=1500.0) == (1.0, 600)  # the alert fires
    assert _drift_gate(wave.drift("digits", "1", ["cam-1"], since=1500.0)) == "fail"
    repos.devices.record_activity({"cam-1": 2500.0})  # still reporting: not silent
    resolved = later.evaluate(2500.0)  # only the clean window in (1600, 2500]
    assert [(t.previous, t.alert.state) for t in resolved.transitions] == [("firing", "resolved")]
    assert resolved.transitions[0].alert.acknowledged_by == "ops"  # kept to the end
    assert later.blocks_rollout("digits", "1") == []
    assert wave.drift("digits", "1", ["cam-1"], since=1500.0) == (0.0, 600)  # clean: none drift
    assert _drift_gate((0.0, 600)) == "pass"
    shifted = wave.drift(
        "digits",
        "1",
        ["cam-1"],
        since=0.0,
    ) or (0.0, 0)
    assert shifted[1] == 1200 and shifted[0] > 0.2  # both windows: feature 0 drifts, PSI major
    assert _drift_gate(shifted) == "fail"
    assert wave.drift("digits", "1", ["cam-9"], since=0.0) is None  # not a device of the wave
    assert [m["state"] for m in hook.received if m["kind"] == "alert"] == ["firing", "resolved"]
    assert client.post(url, headers=ops).status_code == 409  # resolved: nothing to acknowledge
    assert client.get(f"/api/v1/alerts/{alert_id}", headers=viewer).json["state"] == "resolved"
    repos.close()


def test_webhooks_are_retried_with_backoff_and_a_failed_delivery_stays_visible(
    tmp_path: Path, hook: Hook
) -> None:
    from control_plane.api import ApiOptions, create_api
    from control_plane.settings import Settings

    hook.fail_first = 2  # the live hook answers 500 twice, then accepts
    dead = f"http://127.0.0.1:{_free_port()}/hook"  # nothing listens
    repos = open_repositories(str(tmp_path / "store.db"))
    manifest = _fleet(repos)
    _send_windows(repos, manifest, "cam-1", (1.5,), start=1000.0)
    repos.devices.record_activity({"cam-1": 1100.0})
    notifications = Notifications((hook.url, dead), max_attempts=3, backoff_base_s=2.0)
    now = [1100.0]
    alerts = _service(repos, notifications, clock=lambda: now[0])
    first = alerts.evaluate(now[0])  # firing: an alert and a retraining request per hook
    assert [(d.url, d.kind, d.ok, d.state) for d in first.deliveries] == [
        (hook.url, "alert", False, "pending"),
        (hook.url, "retraining_request", False, "pending"),
        (dead, "alert", False, "pending"),
        (dead, "retraining_request", False, "pending"),
    ]
    assert "HTTP Error 500" in str(first.deliveries[0].error)
    assert alerts.deliver_due(now[0] + 1.0) == []  # backoff: not due before 2 s
    second = alerts.deliver_due(now[0] + 2.0)
    assert [(d.url, d.ok, d.attempts) for d in second] == [
        (hook.url, True, 2),  # the 500s were used up by the first attempts
        (hook.url, True, 2),
        (dead, False, 2),
        (dead, False, 2),
    ]
    assert alerts.deliver_due(now[0] + 5.0) == []  # the second backoff is 4 s
    third = alerts.deliver_due(now[0] + 6.0)
    assert [(d.url, d.state, d.attempts) for d in third] == [(dead, "failed", 3)] * 2
    assert alerts.deliver_due(now[0] + 1e6) == []  # attempts exhausted: not retried forever...
    assert [b["kind"] for b in hook.received] == ["alert", "retraining_request"]
    request = hook.received[1]
    assert (request["model"], request["version"]) == ("digits", "1")
    assert "x/x[0]" in request["evidence"]["drifted"]
    assert request["samples"]["drift"] == "/api/v1/drift?model=digits&version=1"

    # ...and visible: the deliveries route and the metrics
    app = create_api(repos, Settings(data_dir=tmp_path / "cp"), ApiOptions())
    tokens = TokenService(repos, app.extensions["fleetcast.api"].audit)
    _, secret = tokens.create("eve", "viewer", Principal("test", "admin"))
    auth = {"Authorization": f"Bearer {secret}"}
    client = app.test_client()
    failed = client.get("/api/v1/alerts/deliveries?state=failed", headers=auth).json["items"]
    assert {(d["target"], d["attempts"]) for d in failed} == {(dead, 3)}
    assert all("Connection refused" in d["last_error"] for d in failed)
    text = client.get("/metrics").get_data(as_text=True)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert (
        samples[("fleetcast_alert_deliveries", (("channel", "webhook"), ("state", "failed")))] == 2
    )
    assert (
        samples[("fleetcast_alert_deliveries", (("channel", "webhook"), ("state", "delivered")))]
        == 2
    )
    firing = (("rule", "feature_drift"), ("severity", "warning"), ("state", "firing"))
    assert samples[("fleetcast_alerts", firing)] == 1
    repos.close()


def test_alerts_are_mailed_through_a_real_smtp_server(
    tmp_path: Path, smtp: tuple[int, Mailbox]
) -> None:
    port, box = smtp
    repos = open_repositories(str(tmp_path / "store.db"))
    manifest = _fleet(repos)
    _send_windows(repos, manifest, "cam-1", (1.5, 0.0), start=1000.0)
    repos.devices.record_activity({"cam-1": 5000.0})
    config = SmtpConfig("127.0.0.1", port, sender="fleetcast@example.org")
    alerts = _service(repos, Notifications(emails=("ops@example.org",), smtp=config))
    fired = alerts.evaluate(1500.0)
    assert [(d.channel, d.ok) for d in fired.deliveries] == [("email", True)] * 2
    firing, retrain = box.messages
    assert firing["Subject"] == "[fleetcast] FIRING warning feature_drift: digits 1"
    assert (firing["From"], firing["X-Rcpt"]) == ("fleetcast@example.org", "ops@example.org")
    assert _body(firing)["state"] == "firing"
    assert retrain["Subject"] == "[fleetcast] retraining requested: digits 1"
    assert "x/x[0]" in _body(retrain)["evidence"]["drifted"]
    alerts.evaluate(2500.0)
    assert box.messages[2]["Subject"] == "[fleetcast] RESOLVED warning feature_drift: digits 1"

    # an SMTP server that is down: the attempt fails, is recorded and retried
    down = SmtpConfig("127.0.0.1", _free_port())
    other = _service(repos, Notifications(emails=("ops@example.org",), smtp=down))
    _send_windows(repos, manifest, "cam-1", (1.5,), start=3000.0, first_seq=3)
    (attempt, *_) = other.evaluate(3500.0).deliveries
    assert (attempt.ok, attempt.state) == (False, "pending") and "refused" in str(attempt.error)
    assert len(box.messages) == 3
    repos.close()


def test_silent_devices_raise_an_alert_that_resolves_when_they_report(
    tmp_path: Path, hook: Hook
) -> None:
    repos = open_repositories(str(tmp_path / "store.db"))
    manifest = _fleet(repos, ("cam-1", "cam-2", "cam-3"))
    for device in ("cam-1", "cam-2", "cam-3"):
        _send_windows(repos, manifest, device, (0.0,), start=1000.0)
    repos.devices.record_activity({"cam-1": 5000.0, "cam-2": 5000.0, "cam-3": 2000.0})
    alerts = _service(repos, Notifications((hook.url,)), clock=lambda: 5100.0)
    assert alerts.availability(5100.0) == [("digits", pytest.approx(1 / 3), ["cam-3"])]
    alerts.monitoring.metrics = MonitoringMetrics()
    alerts.refresh_metrics()
    text = alerts.monitoring.metrics.exposition().decode()
    gauges = {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.labels.get("model") == "digits"
    }
    assert gauges["fleetcast_silent_devices"] == 1
    assert gauges["fleetcast_silent_device_share"] == pytest.approx(1 / 3)
    fired = alerts.evaluate(5100.0)
    (silent,) = [t.alert for t in fired.transitions if t.alert.state == "firing"]
    assert silent.rule.name == "silent_devices" and silent.value == pytest.approx(1 / 3)
    assert hook.received[-1]["rule"] == "silent_devices"
    repos.devices.record_activity({"cam-3": 5200.0})  # it reports again
    back = alerts.evaluate(5300.0)
    assert [(t.alert.rule.name, t.alert.state) for t in back.transitions] == [
        ("silent_devices", "resolved")
    ]
    repos.close()


def test_serve_evaluates_alerts_and_applies_retention_on_its_own_timer(
    tmp_path: Path, hook: Hook
) -> None:
    from control_plane.server import ControlPlane, ServeOptions
    from control_plane.services.retention import RetentionPolicy

    plane = ControlPlane(
        ServeOptions(
            data_dir=tmp_path,
            grpc_address="127.0.0.1:0",
            http_address="127.0.0.1:0",
            store=str(tmp_path / "store.db"),
            rollout_tick_seconds=0,
            alert_interval_s=0.2,
            alert_notifications=Notifications((hook.url,)),
            retention=RetentionPolicy(full_resolution_s=86400.0, interval_s=0.2),
        )
    ).start()
    try:
        assert plane.services is not None
        repos = plane.services.repos
        manifest = _fleet(repos)  # type: ignore[arg-type]
        # three windows from 3 days ago, in one hour: merged into one rollup by retention
        old = (time.time() - 3 * 86400.0) // 3600.0 * 3600.0
        _send_windows(repos, manifest, "cam-1", (0.0, 0.0, 0.0), start=old)  # type: ignore[arg-type]
        recent = time.time() - 800.0  # and one started 800 s ago, kept as uploaded
        _send_windows(repos, manifest, "cam-1", (0.0,), start=recent, first_seq=4)  # type: ignore[arg-type]
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline:
            stored = repos.monitoring.windows(model_name="digits")
            live = repos.alerts.live()
            if [w.merged for w in stored] == [3, 1] and live:
                break
            time.sleep(0.1)
        assert [(w.seq, w.merged) for w in stored] == [(0, 3), (4, 1)]
        # the device was never seen: silent share 1 > 0.1 (default rule: pending for 15 min)
        assert {(s.alert.rule.name, s.alert.state) for s in live} == {("silent_devices", "pending")}

        # what the timer evaluated is on the control plane's /metrics (a real scrape)
        state = {"spec": {"model": "digits", "version": "1"}, "phase": "paused",
                 "created_at": 1.0, "updated_at": 2.0}  # fmt: skip
        repos.rollouts.create("r-1", state, [])
        url = f"http://127.0.0.1:{plane.http_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as answer:
            text = answer.read().decode()
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        version = (("model", "digits"), ("version", "1"))
        series = (("group", "all"), *version)
        assert samples[("fleetcast_ingested_windows_total", version)] == 4  # rollup counts 3
        assert samples[("fleetcast_ingested_rows_total", version)] == 4 * 600
        assert samples[("fleetcast_drift_share", series)] == 0.0  # the clean recent window
        assert samples[("fleetcast_error_rate", series)] == 0.0
        assert samples[("fleetcast_latency_ms", tuple(sorted((*series, ("quantile", "0.95")))))] > 0
        pending = (("rule", "silent_devices"), ("severity", "warning"), ("state", "pending"))
        assert samples[("fleetcast_alerts", pending)] == 1
        assert samples[("fleetcast_silent_device_share", (("model", "digits"),))] == 1.0
        assert samples[("fleetcast_rollout_state", (("rollout", "r-1"), ("state", "paused")))] == 1
        assert samples[("fleetcast_rollout_state", (("rollout", "r-1"), ("state", "running")))] == 0
    finally:
        plane.stop()


def test_an_alert_of_a_rule_no_longer_configured_resolves_instead_of_firing_forever(
    tmp_path: Path, hook: Hook
) -> None:
    from control_plane.core.alerts import Alert, labels_of

    repos = open_repositories(str(tmp_path / "store.db"))
    retired = AlertRule("old_rule", "retired_metric", 1.0, ">", 900.0, 0.0, "warning")
    labels = labels_of({"model": "digits", "version": "1", "group": "all"})
    repos.alerts.save([Alert(retired, labels, "firing", 10.0, 2.0, fired_at=10.0)], [], [], 10.0)
    result = _service(repos, Notifications((hook.url,))).evaluate(1000.0)
    assert [(t.alert.rule.name, t.previous, t.alert.state) for t in result.transitions] == [
        ("old_rule", "firing", "resolved")
    ]
    assert repos.alerts.live() == [] and hook.received[-1]["state"] == "resolved"
    repos.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_two_replicas_evaluating_at_once_notify_each_transition_once(
    tmp_path: Path, hook: Hook, backend: str, request: pytest.FixtureRequest, monkeypatch: Any
) -> None:
    """Both replicas read the empty alert book and both see the breach fire; one saves the
    transition's notifications, and each queued notification is sent by one sender."""
    if backend == "postgres":
        url = request.getfixturevalue("postgres_server").create_database()
    else:
        url = str(tmp_path / "store.db")
    replicas = [open_repositories(url), open_repositories(url)]
    manifest = _fleet(replicas[0])
    _send_windows(replicas[0], manifest, "cam-1", (1.5, 0.0), start=1000.0)
    replicas[0].devices.record_activity({"cam-1": 1500.0})
    read_book, read_outbox = threading.Barrier(2), threading.Barrier(2)
    for repos in replicas:  # hold each replica after its read until the other has read too
        live, due = repos.alerts.live, repos.alerts.due_deliveries

        def held_live(live: Any = live) -> Any:
            rows = live()
            read_book.wait(timeout=30)
            return rows

        def held_due(now: float, limit: int = 100, due: Any = due) -> Any:
            rows = due(now, limit)
            read_outbox.wait(timeout=30)
            return rows

        monkeypatch.setattr(repos.alerts, "live", held_live)
        monkeypatch.setattr(repos.alerts, "due_deliveries", held_due)
    services = [_service(r, Notifications((hook.url,))) for r in replicas]
    results: list[Any] = [None, None]

    def evaluate(i: int) -> None:
        try:
            results[i] = services[i].evaluate(1500.0)
        except Exception as exc:  # shown by the assertion below
            results[i] = exc
            raise

    threads = [threading.Thread(target=evaluate, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for result in results:  # the race happened: each replica computed the firing transition
        assert result is not None and not isinstance(result, Exception), result
        assert "firing" in [t.alert.state for t in result.transitions]
    assert sorted(b["kind"] for b in hook.received) == ["alert", "retraining_request"]
    sent = [d for r in results for d in r.deliveries]
    assert len(sent) == 2 and all(d.ok for d in sent)
    deliveries = replicas[1].alerts.deliveries().items
    assert sorted((d.kind, d.state) for d in deliveries) == [
        ("alert", "delivered"),
        ("retraining_request", "delivered"),
    ]
    for repos in replicas:
        repos.close()
