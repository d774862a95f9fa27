"""Property-based tests of the rollout engine: random event sequences against invariants.

Each example draws a spec (waves, retries, budget, thresholds, policy, approvals,
maintenance windows, gates) and a fleet, then 0-60 steps of random events with
time passing between them: installs, failures, self-test failures, timeouts,
silence, joins and leaves, gate readings (good, bad or thin), operator commands
(some out of place: those must raise RolloutConflict and change nothing), and
ticks with other rollouts' installs. The invariants are checked by oracles
written here, not by calling the engine's own gate code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from control_plane.core.rollout import RolloutConflict, start_rollout, step
from control_plane.core.rollout_gates import VersionStats, WaveReadings
from control_plane.core.rollout_model import (
    Abort,
    Action,
    Approve,
    Deploy,
    DeviceFailed,
    DeviceInstalled,
    DeviceJoined,
    DeviceLeft,
    DeviceReverted,
    DeviceRollbackFailed,
    DeviceRolledBack,
    DeviceSeen,
    DeviceSelfTestFailed,
    DeviceTimedOut,
    DeviceWentSilent,
    Event,
    GateReadingsArrived,
    Pause,
    PromoteWave,
    Resume,
    Rollback,
    RollbackRequested,
    Rollout,
    TargetDevice,
    Tick,
)
from control_plane.core.rollout_spec import RolloutSpec, parse_spec

DAY = 1_764_374_400.0  # 2025-11-29 00:00 UTC
NIGHT_HOURS = range(0, 6)  # the "night" group may only install 00:00-06:00 UTC
EXAMPLES = 300
RESTART_EXAMPLES = 200

Op = tuple[Any, ...]


@st.composite
def specs(draw: st.DrawFn) -> RolloutSpec:
    sizes = draw(
        st.lists(
            st.sampled_from([{"count": 1}, {"count": 2}, {"percent": 25}, {"percent": 50}]),
            max_size=2,
        )
    )
    data: dict[str, Any] = {
        "model": "m",
        "version": "2",
        "target": {"kind": "devices", "selector": {"fleet": "a"}},
        "waves": [*sizes, {"percent": 100}],
        "device_timeout_s": draw(st.sampled_from([30, 120])),
        "retries": draw(st.integers(0, 2)),
        "bake_s": draw(st.sampled_from([0, 30, 600])),
        "success_threshold": draw(st.sampled_from([0.5, 0.8, 1.0])),
        "failure_threshold": draw(st.sampled_from([0.0, 0.25, 0.5])),
        "min_finished": draw(st.integers(1, 3)),
        "on_failure": draw(
            st.sampled_from(["pause", "abort-and-rollback-wave", "abort-and-rollback-all"])
        ),
        "approve_first": draw(st.booleans()),
        "approve_between": draw(st.booleans()),
        "disruption_budget": draw(st.integers(1, 4)),
        "dynamic_tail": draw(st.booleans()),
        "gates": {
            "error_rate": {"enabled": draw(st.booleans()), "min_requests": 100},
            "latency": {"enabled": draw(st.booleans()), "min_requests": 100},
            "availability": {"enabled": draw(st.booleans()), "silent_after_s": 60},
            "drift": {"enabled": draw(st.booleans()), "min_samples": 1000},
            "pending_deadline_s": draw(st.sampled_from([0, 600, 3600])),
        },
    }
    if draw(st.booleans()):
        data["maintenance"] = {"windows": {"night": [{"start": "00:00", "end": "06:00"}]}}
    return parse_spec(data)


DEVICE = st.integers(0, 11)  # d0..d8 may start in the target, d9..d11 can only join
_DEVICE_EVENT = st.tuples(
    st.sampled_from(
        ["installed", "failed", "selftest", "timeout", "reverted", "rolledback", "rollbackfail"]
    ),
    DEVICE,
)
_PRESENCE = st.tuples(st.sampled_from(["silent", "seen", "leave", "join"]), DEVICE)
_READINGS = st.tuples(  # near the limits: error rate 3% (+2% over 1%), p95 8.5 ms (1.5 x 5 + 1)
    st.just("readings"),
    st.sampled_from([-1, -1, 0, 1, 2]),  # -1: the current wave
    st.sampled_from([0, 50, 500]),
    st.sampled_from([0.0, 0.01, 0.04, 0.2]),
    st.sampled_from([5.0, 8.0, 9.0, 50.0]),
    st.sampled_from([None, (), ("feature_drift{model=m,version=2}@0",)]),  # firing drift alerts
)
_OPERATOR = st.tuples(st.sampled_from(["pause", "resume", "approve"]))
_ENDING = st.one_of(
    st.tuples(st.just("abort")), st.tuples(st.just("rollback"), st.sampled_from(["wave", "all"]))
)
# "progress" is what a healthy fleet does (installs succeed, approvals come, good readings
# arrive); it is drawn often so that waves do pass and promotion is put to the test.
_PROGRESS = st.tuples(st.just("progress"))
_TICK = st.tuples(st.just("tick"), st.integers(0, 3))
_ANSWER = st.tuples(st.just("answer"), st.booleans())
OPS = st.one_of(
    [_DEVICE_EVENT, _PRESENCE, _READINGS, _OPERATOR, _ANSWER] + [_PROGRESS] * 6 + [_TICK] * 3
)
DT = st.sampled_from([0, 1, 10, 31, 61, 700, 4 * 3600])


@st.composite
def steps(draw: st.DrawFn) -> list[tuple[int, Op]]:
    """15-60 steps; half of the runs get one abort or rollback somewhere in them."""
    ops = draw(st.lists(st.tuples(DT, OPS), min_size=15, max_size=60))
    if draw(st.booleans()):
        ops.insert(draw(st.integers(0, len(ops))), (draw(DT), draw(_ENDING)))
    return ops


STEPS = steps()


def device(i: int) -> TargetDevice:
    group = "night" if i % 3 == 0 else "day"
    return TargetDevice(f"d{i}", "p", {"fleet": "a", "group": group}, "old")


def events_for(op: Op, r: Rollout, now: float) -> list[Event]:
    kind = op[0]
    simple: dict[str, Any] = {
        "installed": lambda: DeviceInstalled(f"d{op[1]}"),
        "failed": lambda: DeviceFailed(f"d{op[1]}", "x"),
        "selftest": lambda: DeviceSelfTestFailed(f"d{op[1]}", "x"),
        "timeout": lambda: DeviceTimedOut(f"d{op[1]}"),
        "reverted": lambda: DeviceReverted(f"d{op[1]}", "error rate"),
        "rolledback": lambda: DeviceRolledBack(f"d{op[1]}"),
        "rollbackfail": lambda: DeviceRollbackFailed(f"d{op[1]}", "no previous version"),
        "silent": lambda: DeviceWentSilent(f"d{op[1]}", now),
        "seen": lambda: DeviceSeen(f"d{op[1]}"),
        "leave": lambda: DeviceLeft(f"d{op[1]}"),
        "join": lambda: DeviceJoined(device(op[1])),
        "pause": lambda: Pause("op"),
        "resume": lambda: Resume("op"),
        "abort": lambda: Abort("op"),
        "approve": lambda: Approve("op"),
        "rollback": lambda: RollbackRequested("op", op[1]),
        "tick": lambda: Tick(op[1]),
    }
    if kind in simple:
        return [simple[kind]()]
    installing = sorted(d for d, s in r.devices.items() if s.status == "installing")
    if kind == "answer":  # every installing device answers, all well or all badly
        return [DeviceInstalled(d) if op[1] else DeviceFailed(d, "x") for d in installing]
    if kind == "progress":  # installs succeed, the operator approves, good readings arrive
        good = WaveReadings(
            now, VersionStats(1000, 5, 5.0), VersionStats(1000, 10, 5.0), drift_alerts=()
        )
        approve: list[Event] = []
        if r.phase == "running" and r.waves[r.current].status == "awaiting_approval":
            approve = [Approve("op")]
        installed: list[Event] = [DeviceInstalled(d) for d in installing]
        return [*installed, *approve, GateReadingsArrived(r.current, good)]
    _, wave, requests, rate, p95, alerts = op
    wave = r.current if wave < 0 else wave
    new = VersionStats(requests, round(requests * rate), p95)
    base = VersionStats(1000, 10, 5.0)
    return [GateReadingsArrived(wave, WaveReadings(now, new, base, drift_alerts=alerts))]


@dataclass
class Trace:
    steps: list[tuple[float, Event, Rollout, Rollout, list[Action]]]
    actions: list[Action]
    final: Rollout


def run(
    spec: RolloutSpec, n: int, start_hour: int, ops: list[tuple[int, Op]], restart_at: int = -1
) -> Trace:
    now = DAY + start_hour * 3600
    r, actions = start_rollout("r", spec, [device(i) for i in range(n)], {"p": "new"}, now)
    trace = Trace([(now, Tick(), r, r, actions)], list(actions), r)  # the start as a step
    for index, (dt, op) in enumerate(ops):
        if index == restart_at:  # the control plane dies and starts again from the store
            r = Rollout.from_dict(json.loads(json.dumps(r.to_dict())))
        now += dt
        for event in events_for(op, r, now):
            try:
                after, actions = step(r, event, now)
            except RolloutConflict:
                continue
            trace.steps.append((now, event, r, after, actions))
            trace.actions += actions
            r = after
    trace.final = r
    return trace


def _wave_may_pass(spec: RolloutSpec, r: Rollout, index: int, now: float) -> str | None:
    """Oracle: why wave ``index`` of ``r`` must not have been promoted at ``now`` (None: fine)."""
    members = [s for _, s in r.wave_devices(index) if not s.left and s.status != "skipped"]
    if not members:
        return None  # an empty wave is passed over
    wave = r.waves[index]
    ok = sum(s.status == "succeeded" for s in members)
    bad = sum(s.status in ("failed", "timed_out") for s in members)
    if ok + bad < len(members):
        return "devices still in flight"
    if ok / len(members) < spec.success_threshold:
        return "success ratio below the threshold"
    if ok + bad >= spec.min_finished and bad / (ok + bad) > spec.failure_threshold:
        return "failure ratio above the threshold"
    if wave.bake_until is None or wave.bake_until > now:
        return "promoted before the bake ended"
    g = spec.gates
    if g.error_rate.enabled or g.latency.enabled:
        if wave.readings is None or wave.readings["at"] < wave.bake_until:
            return "no readings from after the bake"
        new, base = wave.readings["new"], wave.readings["baseline"]
        if new["requests"] < 100:
            return "too few requests"
        rate = new["failures"] / new["requests"]
        if g.error_rate.enabled and rate > min(0.05, base["failures"] / base["requests"] + 0.02):
            return f"error rate {rate}"
        if g.latency.enabled and new["p95_ms"] > base["p95_ms"] * 1.5 + 1.0:
            return f"p95 {new['p95_ms']}"
    if g.drift.enabled:
        alerts = wave.readings.get("drift_alerts") if wave.readings else None
        if wave.readings is None or wave.readings["at"] < wave.bake_until:
            return "no drift check from after the bake"
        if alerts is None or len(alerts) > 0:
            return f"drift alerts {alerts}"  # no score is drawn: only a clean check passes
    if g.availability.enabled:
        watched = [s for s in members if s.attempts > 0]
        silent = [s for s in watched if s.silent_since is not None and now - s.silent_since >= 60]
        if not watched or len(silent) / len(watched) > g.availability.max_silent_fraction:
            return "devices silent"
    return None


common = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@common
@given(specs(), st.integers(1, 9), st.integers(0, 23), STEPS)
def test_invariants_hold_for_any_sequence_of_events(
    spec: RolloutSpec, n: int, start_hour: int, ops: list[tuple[int, Op]]
) -> None:
    trace = run(spec, n, start_hour, ops)
    deployed: dict[str, list[tuple[float, int]]] = {}
    timed_out_at: dict[str, list[float]] = {}
    rolled_back: set[str] = set()
    failed_waves: set[int] = set()  # failed and not resumed since
    for now, event, before, after, actions in trace.steps:
        if isinstance(event, Resume):
            failed_waves.discard(before.current)
        if isinstance(event, DeviceTimedOut):
            timed_out_at.setdefault(event.device_id, []).append(now)
        sent = [a for a in actions if isinstance(a, Deploy)]
        for a in sent:
            history = deployed.setdefault(a.device_id, [])
            # never twice, unless a retry after a timeout, and no more than the retries
            assert a.attempt == len(history) + 1 <= spec.retries + 1
            if history:
                last = history[-1][0]
                assert now >= last + spec.device_timeout_s or any(
                    last <= t <= now for t in timed_out_at.get(a.device_id, [])
                )
            assert before.devices.get(a.device_id) is None or before.devices[
                a.device_id
            ].status not in ("succeeded", "failed", "timed_out")
            assert a.device_id not in rolled_back
            history.append((now, a.attempt))
            # never during a closed maintenance window
            if spec.maintenance is not None and int(a.device_id[1:]) % 3 == 0:
                assert datetime.fromtimestamp(now, tz=UTC).hour in NIGHT_HOURS
        if sent:
            # never over the disruption budget (this rollout's installs plus the others')
            installing = sum(s.status == "installing" for s in after.devices.values())
            assert installing + after.busy_elsewhere <= spec.disruption_budget
            assert after.phase in ("running", "completed")
        for a in (a for a in actions if isinstance(a, Rollback)):
            # never to a device that went back by itself, never twice
            assert not before.devices[a.device_id].reverted
            assert a.device_id not in rolled_back
        rolled_back |= {a.device_id for a in actions if isinstance(a, Rollback)}
        for promote in (a for a in actions if isinstance(a, PromoteWave)):
            assert promote.from_wave not in failed_waves  # a failed gate is final until resumed
            # never past a failed gate, nor past one that has not yet passed
            why = _wave_may_pass(spec, after, promote.from_wave, now)
            assert why is None, why
            assert all(g["verdict"] == "pass" for g in after.waves[promote.from_wave].gates)
        failed_waves |= {w.index for w in after.waves if w.status == "failed"}
        if after.phase == "rolled_back" and before.phase != "rolled_back":
            # after rollback-all every touched device has a rollback, or went back by itself
            reverted = {d for d, s in after.devices.items() if s.reverted}
            assert set(deployed) <= rolled_back | reverted
    for device_id, d in trace.final.devices.items():
        # a rollback's outcome only ever follows a rollback sent
        assert d.rollback is None or device_id in rolled_back
        assert not (d.reverted and d.rolled_back)


@settings(
    max_examples=RESTART_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(specs(), st.integers(1, 9), st.integers(0, 23), STEPS, st.integers(0, 60))
def test_a_restart_at_any_point_yields_the_same_actions(
    spec: RolloutSpec, n: int, start_hour: int, ops: list[tuple[int, Op]], restart_at: int
) -> None:
    straight = run(spec, n, start_hour, ops)
    restarted = run(spec, n, start_hour, ops, restart_at=restart_at)
    assert restarted.actions == straight.actions
    assert restarted.final.to_dict() == straight.final.to_dict()


def _oracle(
    spec: RolloutSpec,
    new: VersionStats,
    base: VersionStats,
    baked: bool,
    alerts: tuple[str, ...] | None = None,
) -> str:
    """pass / fail / pending for one reading, from the documented limits."""
    g = spec.gates
    verdicts = []
    if g.drift.enabled:  # no score is read here: a firing alert fails, a clean check passes
        verdicts.append("pending" if alerts is None else "fail" if alerts else "pass")
    if g.error_rate.enabled:
        limit = min(g.error_rate.max_error_rate, base.error_rate + g.error_rate.max_increase)
        if new.requests < g.error_rate.min_requests:
            verdicts.append("pending")
        else:
            verdicts.append("fail" if new.error_rate > limit else "pass")
    if g.latency.enabled:
        assert new.p95_ms is not None and base.p95_ms is not None
        limit_ms = base.p95_ms * g.latency.max_ratio + g.latency.slack_ms
        if new.requests < g.latency.min_requests:
            verdicts.append("pending")
        else:
            verdicts.append("fail" if new.p95_ms > limit_ms else "pass")
    if "fail" in verdicts:
        return "fail"
    return "pass" if baked and all(v == "pass" for v in verdicts) else "pending"


@common
@given(
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.integers(1, 5),
    st.lists(
        st.tuples(
            st.sampled_from([0, 5, 20, 40]),
            st.sampled_from([0, 99, 100, 1000]),
            st.sampled_from([0.0, 0.029, 0.031, 0.05, 0.051, 0.3]),
            st.sampled_from([1.0, 8.5, 8.6, 40.0]),
            st.sampled_from([None, (), ("feature_drift{model=m,version=2}@0",)]),
        ),
        min_size=1,
        max_size=8,
    ),
)
def test_gates_decide_a_wave_exactly_as_their_documented_limits(
    errors: bool,
    latency: bool,
    drift: bool,
    n: int,
    readings: list[tuple[int, int, float, float, tuple[str, ...] | None]],
) -> None:
    spec = parse_spec(
        {
            "model": "m",
            "version": "2",
            "target": {"kind": "devices", "selector": {"fleet": "a"}},
            "waves": [{"percent": 100}],
            "bake_s": 30,
            "on_failure": "pause",
            "gates": {
                "error_rate": {"enabled": errors, "min_requests": 100},
                "latency": {"enabled": latency, "min_requests": 100},
                "drift": {"enabled": drift},
                "availability": {"enabled": False},
            },
        }
    )
    now = DAY
    r, _ = start_rollout("r", spec, [device(i) for i in range(n)], {"p": "new"}, now)
    for d in sorted(r.devices):
        r, _ = step(r, DeviceInstalled(d), now)
    bake_until = now + 30
    base = VersionStats(1000, 10, 5.0)  # 1% errors, p95 5 ms: limits 3% and 8.5 ms
    for dt, requests, rate, p95, alerts in readings:
        now += dt
        new = VersionStats(requests, round(requests * rate), p95)
        reading = WaveReadings(now, new, base, drift_alerts=alerts)
        r, _ = step(r, GateReadingsArrived(0, reading), now)
        expected = _oracle(spec, new, base, now >= bake_until, alerts)
        phase = {"pass": "completed", "fail": "paused", "pending": "running"}[expected]
        assert r.phase == phase, (expected, new, r.reason)
        if r.phase != "running":
            break
