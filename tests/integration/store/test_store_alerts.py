"""The alert book, the notification outbox and telemetry retention on both backends."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from store_support import OpenStore

from control_plane.core.alerts import Alert, AlertRule, labels_of, short_id
from control_plane.core.sketches import decode_kll, kll_rank_error
from control_plane.errors import Conflict, InvalidInput, NotFound
from control_plane.services.audit import AuditService
from control_plane.services.devices import DeviceService
from control_plane.services.ingest import IngestService
from control_plane.services.monitoring import MonitoringService
from control_plane.store.records import NewDelivery, NewDevice, Package
from control_plane.store.sql.store import SqlRepositories
from edge_agent.core.telemetry import ModelTelemetry
from tests.unit.control_plane.monitoring_support import monitored_manifest

GATE = AlertRule("feature_drift", "drift_features", 1, ">=", 900.0, 0.0, "warning",
                 (("model", "digits"),), gates_rollout=True)  # fmt: skip
PLAIN = AlertRule("error_rate", "error_rate", 0.05, ">", 900.0, 0.0, "critical")


def _alert(rule: AlertRule, version: str, state: str = "firing", since: float = 10.0) -> Alert:
    labels = labels_of({"model": "digits", "version": version, "group": "all"})
    return Alert(rule, labels, state, since, 2.0, fired_at=since if state != "pending" else None)  # type: ignore[arg-type]


def test_the_alert_book_is_stored_listed_and_acknowledged(open_store: OpenStore) -> None:
    repos = open_store()
    firing, pending = _alert(GATE, "1"), _alert(PLAIN, "1", "pending")
    other = _alert(GATE, "2", since=20.0)
    repos.alerts.save([firing, pending, other], [], [], at=30.0)
    again = open_store()  # another connection (a replica, a restart): the same book
    assert {s.id for s in again.alerts.live()} == {short_id(a) for a in (firing, pending, other)}
    stored = again.alerts.get(short_id(firing))
    assert stored.alert == firing and stored.updated_at == 30.0

    page = again.alerts.list(limit=2)
    assert len(page.items) == 2 and page.next_offset == 2
    assert len(again.alerts.list(limit=2, offset=2).items) == 1
    assert [s.alert for s in again.alerts.list(state="pending").items] == [pending]
    assert {s.alert.labels for s in again.alerts.list(version="2").items} == {other.labels}
    assert [s.alert.rule.name for s in again.alerts.list(severity="critical").items] == [
        "error_rate"
    ]
    with pytest.raises(InvalidInput, match="alert state 'open'"):
        again.alerts.list(state="open")
    assert [s.alert for s in again.alerts.firing_gates("digits", "1")] == [firing]
    assert again.alerts.counts() == {
        ("feature_drift", "warning", "firing"): 2,
        ("error_rate", "critical", "pending"): 1,
    }

    acked = again.alerts.acknowledge(short_id(firing), "ops", at=40.0)
    assert acked.alert.acknowledged_by == "ops" and acked.acknowledged_at == 40.0
    assert again.alerts.acknowledge(short_id(firing), "bob", 50.0).alert.acknowledged_by == "ops"
    with pytest.raises(Conflict, match="is pending"):
        again.alerts.acknowledge(short_id(pending), "ops", 40.0)
    with pytest.raises(NotFound):
        again.alerts.acknowledge("al-nope", "ops", 40.0)

    # the next evaluation saves the resolution: the acknowledgement stays, the pending one goes
    resolved = replace(firing, state="resolved", resolved_at=60.0, acknowledged_by="ops")
    repos.alerts.save([resolved], [short_id(pending)], [], at=60.0)
    assert {s.id for s in again.alerts.live()} == {short_id(other)}
    back = again.alerts.get(short_id(firing))
    assert (back.alert.state, back.alert.acknowledged_by) == ("resolved", "ops")
    assert again.alerts.firing_gates("digits", "1") == []
    with pytest.raises(Conflict, match="is resolved"):
        again.alerts.acknowledge(short_id(firing), "ops", 70.0)


def test_the_outbox_records_each_attempt_retries_and_keeps_failures(repos: SqlRepositories) -> None:
    alert = _alert(GATE, "1")
    body = {"kind": "alert", "id": short_id(alert)}
    ids = repos.alerts.save(
        [alert],
        [],
        [
            NewDelivery(short_id(alert), "webhook", "http://a/hook", "alert", body, 2),
            NewDelivery(short_id(alert), "email", "ops@example.org", "alert", body, 3),
        ],
        at=100.0,
    )
    due = repos.alerts.due_deliveries(100.0)
    assert [d.id for d in due] == ids and due[0].body == body and due[0].attempts == 0
    assert repos.alerts.due_deliveries(99.0) == []

    retry = repos.alerts.delivery_attempted(ids[0], 100.0, "URLError: refused", 102.0)
    assert (retry.state, retry.attempts, retry.next_attempt_at) == ("pending", 1, 102.0)
    assert [d.id for d in repos.alerts.due_deliveries(101.0)] == [ids[1]]
    failed = repos.alerts.delivery_attempted(ids[0], 102.0, "URLError: refused", None)
    assert (failed.state, failed.attempts, failed.last_error) == ("failed", 2, "URLError: refused")
    sent = repos.alerts.delivery_attempted(ids[1], 101.0, None, None)
    assert (sent.state, sent.delivered_at, sent.last_error) == ("delivered", 101.0, None)
    assert repos.alerts.due_deliveries(1e9) == []  # nothing left to send, nothing lost
    assert [d.id for d in repos.alerts.deliveries(state="failed").items] == [ids[0]]
    assert len(repos.alerts.deliveries(alert_id=short_id(alert)).items) == 2
    assert repos.alerts.delivery_counts() == {("webhook", "failed"): 1, ("email", "delivered"): 1}


def _data(seed: int, rows: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, (rows, 4)).astype(np.float32)
    x[:, 0] += shift
    e = np.exp(x[:, :3] * 2.0)
    return x, (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def test_downsampling_merges_old_windows_exactly_and_keeps_recent_ones(
    repos: SqlRepositories,
) -> None:
    x, scores = _data(0, 5000)
    manifest = monitored_manifest(x, scores)
    repos.packages.put(
        Package("d" * 64, manifest.package_id, "digits", "1", manifest.profile.id, 1, 1, "/p",
                manifest.model_dump(mode="json"), 1.0)
    )  # fmt: skip
    repos.devices.add(NewDevice("cam-1", "h"), at=1.0)
    ingest = IngestService(repos, DeviceService(repos))
    now = [0.0]
    per_window = ModelTelemetry(manifest, clock=lambda: now[0], seed=0)
    whole = ModelTelemetry(manifest, clock=lambda: now[0], seed=0)  # all the rows in one window
    latencies = np.random.default_rng(9).gamma(2.0, 3.0, 12 * 300)  # ms
    recorded: list[float] = []
    for seq in range(1, 13):  # 12 windows of 10 minutes: hours 0 and 1
        xs, ss = _data(seq, 300, shift=0.3 * (seq % 3))
        for i in range(0, 300, 5):
            lat = float(latencies[(seq - 1) * 300 + i]) / 1000.0
            recorded.append(lat * 1e3)
            per_window.record({"x": xs[i : i + 5]}, {"probs": ss[i : i + 5]}, lat)
            whole.record({"x": xs[i : i + 5]}, {"probs": ss[i : i + 5]}, lat)
        now[0] += 600.0
        window = per_window.close_window("cam-1", seq)
        assert ingest.ingest("cam-1", [(seq, "telemetry_window", json.dumps(window))], "grpc").acked
    concatenated = whole.close_window("cam-1", 99)
    monitoring = MonitoringService(repos, AuditService(repos.audit))
    before = monitoring.drift("digits", "1")
    counts = repos.monitoring.window_counts()

    # older than 1 h: windows 1..6 (started 0..3000) merge into one hourly rollup
    assert repos.monitoring.downsample(before=3600.0, bucket_seconds=3600.0) == (6, 1)
    stored = repos.monitoring.windows(model_name="digits")
    assert [(w.seq, w.merged) for w in stored] == [(0, 6)] + [(s, 1) for s in range(7, 13)]
    assert repos.monitoring.window_counts() == counts  # nothing counted twice or lost
    # the rest, in two calls of at most 4 windows: the second merges into the stored rollup
    assert repos.monitoring.downsample(before=1e9, bucket_seconds=3600.0, limit=4) == (4, 1)
    assert repos.monitoring.downsample(before=1e9, bucket_seconds=3600.0) == (2, 1)
    (hour0, hour1) = repos.monitoring.windows(model_name="digits")
    assert (hour0.merged, hour1.merged, hour1.bucket_seconds) == (6, 6, 3600.0)
    assert (hour0.started_at, hour1.ended_at) == (0.0, 7200.0)
    assert repos.monitoring.window_counts() == counts

    # exact: the sum of the rollups' histograms is the histogram of the concatenated rows
    for section in ("inputs", "outputs"):
        for t_all, t0, t1 in zip(
            concatenated[section], hour0.histograms[section], hour1.histograms[section], strict=True
        ):
            for f_all, f0, f1 in zip(
                t_all["features"], t0["features"], t1["features"], strict=True
            ):
                assert np.array_equal(np.add(f0["counts"], f1["counts"]), f_all["counts"]), f_all[
                    "name"
                ]
    assert hour0.rows + hour1.rows == concatenated["rows"] == 3600
    assert hour0.requests + hour1.requests == concatenated["requests"]
    # the merged KLL answers the concatenated data's ranks within its error
    merged = decode_kll(hour0.latency["kll"])
    merged.merge(decode_kll(hour1.latency["kll"]))
    truth = np.sort(recorded)
    eps = kll_rank_error(merged) + 1e-9
    for q in (0.5, 0.95, 0.99):
        value = merged.get_quantile(q)
        rank = np.searchsorted(truth, value, side="right") / truth.size
        assert abs(rank - q) <= eps, (q, rank, eps)
    assert hour0.latency["count"] + hour1.latency["count"] == concatenated["latency_ms"]["count"]
    # and the drift over the whole span is unchanged
    after = monitoring.drift("digits", "1")
    assert after["windows"] == before["windows"] == 12
    assert after["reports"][0]["features"] == before["reports"][0]["features"]
    assert after["reports"][0]["status"] == before["reports"][0]["status"]
    assert after["reports"][0]["latency_ms"]["p95"] == pytest.approx(
        before["reports"][0]["latency_ms"]["p95"], rel=0.05
    )

    assert repos.monitoring.drop_rollups(before=3600.0) == 1  # hour 0 ended at 3600
    assert [w.started_at for w in repos.monitoring.windows(model_name="digits")] == [3600.0]


def test_batched_ingest_stores_each_window_once_under_duplicate_delivery(
    repos: SqlRepositories,
) -> None:
    x, scores = _data(0, 2000)
    manifest = monitored_manifest(x, scores)
    repos.packages.put(
        Package("d" * 64, manifest.package_id, "digits", "1", manifest.profile.id, 1, 1, "/p",
                manifest.model_dump(mode="json"), 1.0)
    )  # fmt: skip
    repos.devices.add(NewDevice("cam-1", "h"), at=1.0)
    ingest = IngestService(repos, DeviceService(repos))
    telemetry = ModelTelemetry(manifest, seed=0)
    items = []
    for seq in range(1, 6):
        xs, ss = _data(seq, 100)
        telemetry.record({"x": xs}, {"probs": ss}, 0.001)
        items.append((seq, "telemetry_window", json.dumps(telemetry.close_window("cam-1", seq))))
    assert ingest.ingest("cam-1", items[:3], "grpc").acked == [1, 2, 3]
    # a resend overlapping the first, a window twice in one upload, and a bad one
    bad = (6, "telemetry_window", items[0][2])  # seq 6 carrying window 1's body
    again = ingest.ingest("cam-1", [items[1], items[2], items[3], items[3], items[4], bad], "mqtt")
    assert again.acked == [2, 3, 4, 4, 5] and again.rejected == [6]
    assert "body sequence 1 != envelope sequence 6" in again.errors[0]
    stored = repos.monitoring.windows(model_name="digits")
    assert [w.seq for w in stored] == [1, 2, 3, 4, 5]
    assert all(w.package_sha256 == "d" * 64 and w.rows == 100 for w in stored)
    assert [u.seq for u in repos.uploads.list(device_id="cam-1").items] == [1, 2, 3, 4, 5]
    assert repos.uploads.add("cam-1", [], "grpc", 1.0) == []
    # the stored window is the uploaded one: histograms and latency as sent
    sent = json.loads(items[3][2])
    assert stored[3].histograms == {"inputs": sent["inputs"], "outputs": sent["outputs"]}
    assert stored[3].latency["kll"] == sent["latency_ms"]["kll"]


def test_concurrent_uploads_share_one_transaction_and_are_stored_once(
    repos: SqlRepositories,
) -> None:
    """A group commit: uploads arriving while a commit is in flight are stored together in the
    next transaction; a resend and the same upload twice in one group are stored once, and
    every caller is answered only after its transaction committed."""
    x, scores = _data(0, 2000)
    manifest = monitored_manifest(x, scores)
    repos.packages.put(
        Package("d" * 64, manifest.package_id, "digits", "1", manifest.profile.id, 1, 1, "/p",
                manifest.model_dump(mode="json"), 1.0)
    )  # fmt: skip
    devices = ("cam-1", "cam-2", "cam-3")
    windows: dict[str, list[tuple[int, str, str]]] = {}
    for device in devices:
        repos.devices.add(NewDevice(device, "h"), at=1.0)
        telemetry = ModelTelemetry(manifest, seed=0)
        windows[device] = []
        for seq in (1, 2):
            xs, ss = _data(seq, 50)
            telemetry.record({"x": xs}, {"probs": ss}, 0.001)
            body = json.dumps(telemetry.close_window(device, seq))
            windows[device].append((seq, "telemetry_window", body))
    ingest = IngestService(repos, DeviceService(repos))
    real_write = ingest.group.write
    first_commit, release = threading.Event(), threading.Event()
    committed: list[tuple[str, ...]] = []

    def write(batches: Any) -> Any:
        if not first_commit.is_set():  # hold the first commit until the others queued
            first_commit.set()
            assert release.wait(10)
        stored = real_write(batches)
        committed.append(tuple(b.device_id for b in batches))
        return stored

    ingest.group.write = write
    answers: dict[str, Any] = {}

    def send(name: str, device: str, items: list[tuple[int, str, str]]) -> None:
        answers[name] = ingest.ingest(device, items, "grpc")

    leader = threading.Thread(target=send, args=("first", "cam-1", windows["cam-1"][:1]))
    leader.start()
    assert first_commit.wait(10)
    others = [
        ("cam-2", "cam-2", windows["cam-2"]),
        ("cam-3", "cam-3", windows["cam-3"]),
        ("cam-1 resend", "cam-1", windows["cam-1"]),  # window 1 again, and window 2
        ("cam-3 twice", "cam-3", windows["cam-3"][1:]),  # the same upload in the same group
    ]
    threads = [threading.Thread(target=send, args=o) for o in others]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while ingest.group.queued() < len(others) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ingest.group.queued() == len(others)
    assert "first" not in answers  # not acked before its commit
    release.set()
    for t in [leader, *threads]:
        t.join(10)
    assert [sorted(c) for c in committed] == [["cam-1"], ["cam-1", "cam-2", "cam-3", "cam-3"]]
    assert ingest.group.commits == 2 and ingest.group.uploads == 5
    assert answers["first"].acked == [1] and answers["cam-1 resend"].acked == [1, 2]
    assert answers["cam-3"].acked == [1, 2] and answers["cam-3 twice"].acked == [2]
    stored = repos.monitoring.windows(model_name="digits")
    assert sorted((w.device_id, w.seq) for w in stored) == [(d, s) for d in devices for s in (1, 2)]
    for device in devices:
        assert [u.seq for u in repos.uploads.list(device_id=device).items] == [1, 2]


def test_a_saved_transition_is_queued_once_and_a_due_delivery_claimed_once(
    open_store: OpenStore,
) -> None:
    """Two replicas saving the same transition, then claiming the same due delivery."""
    one, two = open_store(), open_store()
    pending = _alert(GATE, "1", "pending")
    firing = replace(pending, state="firing", fired_at=20.0)
    body = {"kind": "alert"}
    hook = NewDelivery(short_id(firing), "webhook", "http://a/hook", "alert", body, 3)
    assert one.alerts.save([pending], [], [], at=10.0) == []
    first = one.alerts.save([firing], [], [hook], at=20.0)
    assert len(first) == 1
    assert two.alerts.save([firing], [], [hook], at=20.5) == []  # the state was already firing
    assert two.alerts.get(short_id(firing)).updated_at == 20.5  # the value is still refreshed
    fresh = _alert(PLAIN, "1", since=30.0)  # new and firing at once: the insert decides
    twice = NewDelivery(short_id(fresh), "webhook", "http://a/hook", "alert", body, 3)
    assert len(one.alerts.save([fresh], [], [twice], at=30.0)) == 1
    assert two.alerts.save([fresh], [], [twice], at=30.0) == []
    assert len(one.alerts.deliveries().items) == 2

    claimed = one.alerts.claim_due(40.0, lease_s=60.0)
    assert sorted(d.alert_id for d in claimed) == sorted([short_id(firing), short_id(fresh)])
    assert two.alerts.claim_due(40.0, lease_s=60.0) == []  # the other replica's sender skips
    assert two.alerts.due_deliveries(99.0) == []
    one.alerts.delivery_attempted(claimed[0].id, 41.0, None, None)  # sent; the other never is
    again = two.alerts.claim_due(100.0, lease_s=60.0)  # its lease ran out: due again
    assert [d.id for d in again] == [claimed[1].id]
