"""Retention of raw uploads and captures on both backends: old rows pruned, recent ones
kept, exactly-once kept across pruning, the rollout gates unchanged, labels of pruned
captures reported as unknown."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from datasketches import kll_floats_sketch

from control_plane.core.rollout_model import Rollout
from control_plane.services.audit import AuditService
from control_plane.services.devices import DeviceService
from control_plane.services.ingest import IngestService
from control_plane.services.monitoring import MonitoringService
from control_plane.services.retention import DAY, RetentionPolicy, RetentionService
from control_plane.services.rollouts import RolloutService, WindowReadings
from control_plane.services.tokens import Principal
from control_plane.store.records import ModelCard, NewDevice, Package
from control_plane.store.sql.store import SqlRepositories

OPERATOR = Principal("ops", "operator")
PROBS = {"probs": [[0.1, 0.9]]}
X86 = "x86-64-generic"
KEY = ("digits", "7")


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _window(
    device: str,
    seq: int,
    at: float,
    version: str = "7",
    errors: int = 0,
    latencies: tuple[float, ...] = (),
    captures: tuple[str, ...] = (),
) -> tuple[int, str, str]:
    sketch = kll_floats_sketch(200)
    for value in latencies:
        sketch.update(value)
    body: dict[str, Any] = {
        "kind": "telemetry_window",
        "device_id": device,
        "sequence": seq,
        "model_name": "digits",
        "model_version": version,
        "started_at": at - 60.0,
        "ended_at": at,
        "requests": 10,
        "rows": 10,
        "errors": errors,
        "latency_ms": {
            "count": len(latencies),
            "kll": base64.b64encode(sketch.serialize()).decode() if latencies else None,
        },
        "captures": [
            {"prediction_id": pid, "at": at - 1.0, "outputs": {"probs": [[0.1, 0.9]]}}
            for pid in captures
        ],
    }
    return seq, "telemetry_window", json.dumps(body)


def _status(device: str, seq: int) -> tuple[int, str, str]:
    body = {"kind": "status", "device_id": device, "sequence": seq, "at": 1.0, "event": "hello"}
    return seq, "status", json.dumps(body)


def _seqs(repos: SqlRepositories, device: str) -> list[int]:
    return [u.seq for u in repos.uploads.list(device_id=device, limit=1000).items]


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def ingest(repos: SqlRepositories, clock: Clock) -> IngestService:
    for device in ("cam-1", "cam-2"):
        repos.devices.add(NewDevice(device, "h", labels={"site": "lab"}, profile_id=X86), 1.0)
    return IngestService(repos, DeviceService(repos), clock=clock)


def test_old_uploads_are_pruned_and_a_resend_is_still_a_duplicate(
    repos: SqlRepositories, ingest: IngestService, clock: Clock
) -> None:
    start = clock.now
    # cam-1 sends 1..4, 6 (5 is still in its outbox) and a status 7; cam-2 its own 3
    old = [_window("cam-1", s, start) for s in (1, 2, 3, 4, 6)] + [_status("cam-1", 7)]
    assert ingest.ingest("cam-1", old, "grpc").acked == [1, 2, 3, 4, 6, 7]
    assert ingest.ingest("cam-2", [_window("cam-2", 3, start)], "grpc").acked == [3]
    clock.now = start + 8 * DAY
    assert ingest.ingest("cam-1", [_window("cam-1", 8, clock.now)], "grpc").acked == [8]
    counts = repos.monitoring.window_counts()

    policy = RetentionPolicy(uploads_s=7 * DAY, captures_s=0, batch=2)  # 2 rows a transaction
    result = RetentionService(repos, policy).run(clock.now)
    assert result.uploads == 7  # cam-1's six, cam-2's one; seq 8 is a day old
    assert _seqs(repos, "cam-1") == [8] and _seqs(repos, "cam-2") == []
    # what was received is remembered as ranges; 5 was never received: a gap
    assert repos.retention.pruned_uploads("cam-1") == [(1, 4), (6, 7)]
    assert repos.retention.pruned_uploads("cam-2") == [(3, 3)]

    # the agent resends 3, 6, 7 (their ack was lost) and, at last, 5
    resent = [_window("cam-1", 3, start), _window("cam-1", 6, start), _status("cam-1", 7)]
    assert ingest.ingest("cam-1", resent, "grpc").acked == [3, 6, 7]  # acked...
    assert _seqs(repos, "cam-1") == [8]  # ... not stored again
    assert repos.monitoring.window_counts() == counts  # nor their windows indexed twice
    assert ingest.ingest("cam-1", [_window("cam-1", 5, start)], "grpc").acked == [5]
    assert _seqs(repos, "cam-1") == [5, 8]  # the gap's seq is new: stored, its window indexed
    assert repos.monitoring.window_counts()[KEY][0] == counts[KEY][0] + 1

    clock.now += 8 * DAY  # everything old now: 5 closes the gap, 8 extends the range
    assert RetentionService(repos, policy).run(clock.now).uploads == 2
    assert repos.retention.pruned_uploads("cam-1") == [(1, 8)]
    assert ingest.ingest("cam-1", [_window("cam-1", 5, start)], "grpc").acked == [5]
    assert _seqs(repos, "cam-1") == []
    # 0 keeps them
    assert ingest.ingest("cam-1", [_window("cam-1", 9, clock.now)], "grpc").acked == [9]
    clock.now += 30 * DAY
    kept = RetentionPolicy(uploads_s=0, captures_s=0)
    assert RetentionService(repos, kept).run(clock.now).uploads == 0
    assert _seqs(repos, "cam-1") == [9]


def test_rollout_gates_read_the_same_after_the_raw_uploads_are_pruned(
    repos: SqlRepositories, ingest: IngestService, clock: Clock
) -> None:
    repos.models.add("digits", "", "ml", 1.0)
    repos.versions.add("digits", "7", ModelCard("digits", "sklearn", "ml"), None, 1.0)
    repos.versions.set_stage("digits", "7", "registered", "compiled", 1.0)
    repos.packages.put(Package("a" * 64, "digits-7-x86", "digits", "7", X86, 1, 9, "/x", {}, 1.0))
    for device in ("cam-1", "cam-2"):
        repos.devices.touch(device, clock())
    service = RolloutService(repos, AuditService(repos.audit, clock), clock=clock)
    spec = {
        "model": "digits",
        "version": "7",
        "target": {"kind": "devices", "selector": {"site": "lab"}},
        "waves": [{"percent": 100}],
        "bake_s": 10,
        "min_finished": 1,
    }
    rollout = Rollout.from_dict(service.create(spec, OPERATOR).to_dict())
    since = clock.now
    ingest.ingest("cam-1", [_window("cam-1", 1, since - 1, "6", 1, (1.0,) * 50)], "grpc")
    clock.now += 5
    fast, slow = tuple(float(i) for i in range(1, 101)), (500.0,) * 20
    ingest.ingest("cam-1", [_window("cam-1", 2, clock.now, "7", 2, fast)], "grpc")
    ingest.ingest("cam-2", [_window("cam-2", 1, clock.now, "7", 3, slow)], "grpc")
    before = WindowReadings(repos).read(rollout, 0, ["cam-1", "cam-2"], since, clock.now)
    assert before is not None and before.baseline is not None
    assert (before.new.requests, before.new.failures) == (20, 5)
    assert (before.baseline.requests, before.baseline.failures) == (10, 1)
    assert before.new.p95_ms == pytest.approx(500.0)  # the merged sketch: cam-2's tail

    assert repos.retention.prune_uploads(clock.now + 1) == 3
    assert repos.uploads.list(limit=10).items == []
    after = WindowReadings(repos).read(rollout, 0, ["cam-1", "cam-2"], since, clock.now)
    assert after == before
    # and once the windows are merged into rollups (a wave baking past full resolution)
    assert repos.monitoring.downsample(before=clock.now + 1, bucket_seconds=3600.0)[0] == 3
    merged = WindowReadings(repos).read(rollout, 0, ["cam-1", "cam-2"], since, clock.now)
    assert merged is not None and merged.baseline is not None
    assert (merged.new.requests, merged.new.failures) == (20, 5)
    assert (merged.baseline.requests, merged.baseline.failures) == (10, 1)


def test_old_captures_go_with_their_explanations_and_labels(
    repos: SqlRepositories, ingest: IngestService, clock: Clock
) -> None:
    start = clock.now
    old = _window("cam-1", 1, start, captures=("p-old", "p-both"))
    assert ingest.ingest("cam-1", [old], "grpc").acked == [1]
    clock.now = start + 20 * DAY
    recent = _window("cam-2", 1, clock.now, captures=("p-new", "p-both"))
    assert ingest.ingest("cam-2", [recent], "grpc").acked == [1]
    monitoring = MonitoringService(repos, AuditService(repos.audit, clock), clock=clock)
    labels = [("p-old", 3.0), ("p-both", 3.0), ("p-new", 1.0), ("p-never", 2.0)]
    assert monitoring.add_feedback(labels, OPERATOR).unknown_ids == ("p-never",)
    repos.insights.put_explanation("p-old", "cam-1", "a" * 64, {"shap": [1.0]}, clock.now)
    repos.insights.put_explanation("p-new", "cam-2", "a" * 64, {"shap": [2.0]}, clock.now)

    clock.now = start + 31 * DAY  # cam-1's captures are 31 days old, cam-2's 11
    policy = RetentionPolicy(uploads_s=0, captures_s=30 * DAY, batch=1)
    result = RetentionService(repos, policy).run(clock.now)
    # p-old's label goes with its capture; p-both's stays (cam-2 still has a capture of it);
    # p-never's label (never matched) is 11 days old: kept for a capture arriving late
    assert (result.captures, result.labels) == (2, 1)
    left = repos.monitoring.captures(["p-old", "p-both", "p-new"])
    assert sorted((c.prediction_id, c.device_id) for c in left) == [
        ("p-both", "cam-2"),
        ("p-new", "cam-2"),
    ]
    assert [c.outputs for c in left] == [PROBS, PROBS]  # the sealed samples open as before
    assert repos.insights.explanation("p-old", "cam-1") is None
    assert repos.insights.explanation("p-new", "cam-2") == {"shap": [2.0]}
    ids = ["p-old", "p-both", "p-new", "p-never"]
    assert {f.prediction_id for f in repos.monitoring.feedback(ids)} == {
        "p-both",
        "p-new",
        "p-never",
    }
    # a label arriving for the pruned capture is reported unknown (as any unknown id)
    late = monitoring.add_feedback([("p-old", 3.0), ("p-new", 1.0)], OPERATOR)
    assert (late.matched, late.unknown_ids) == (1, ("p-old",))

    clock.now = start + 62 * DAY  # everything past the period: the unmatched labels go too
    result = RetentionService(repos, policy).run(clock.now)
    assert (result.captures, result.labels) == (2, 4)
    assert repos.monitoring.captures(["p-both", "p-new"]) == []
    assert repos.monitoring.feedback(ids) == []


def test_the_alias_is_indexed_and_rollups_keep_aliases_apart(
    repos: SqlRepositories, ingest: IngestService, clock: Clock
) -> None:
    def stamped(seq: int, alias: str | None) -> tuple[int, str, str]:
        seq, kind, body = _window("cam-1", seq, clock.now, errors=seq)
        return seq, kind, json.dumps({**json.loads(body), "alias": alias}) if alias else body

    items = [stamped(1, "scorer:live"), stamped(2, "scorer:canary"), stamped(3, None)]
    assert ingest.ingest("cam-1", items, "grpc").acked == [1, 2, 3]
    since = clock.now - 1

    def aliases() -> list[tuple[str | None, int]]:
        found = repos.monitoring.received(model_name="digits", device_id="cam-1", since=since)
        return sorted(((w.alias, w.errors) for w in found), key=str)

    expected = [("scorer:canary", 2), ("scorer:live", 1), (None, 3)]
    assert aliases() == expected
    assert repos.monitoring.downsample(before=clock.now + 1, bucket_seconds=3600.0) == (3, 3)
    assert aliases() == expected  # one rollup each, not one for the three


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"uploads_s": -1.0}, "must be >= 0"),
        ({"captures_s": -DAY}, "must be >= 0"),
        ({"batch": 0}, "expected >= 1"),
    ],
)
def test_a_bad_policy_is_refused_naming_the_problem(fields: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetentionPolicy(**fields)  # type: ignore[arg-type]
