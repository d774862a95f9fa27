"""Every transition of the rollout state machine, table-driven where a table fits."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from control_plane.core.rollout import RolloutConflict, start_rollout, step, summary
from control_plane.core.rollout_gates import VersionStats, WaveReadings
from control_plane.core.rollout_model import (
    Abort,
    Action,
    Approve,
    Audit,
    Deploy,
    DeviceFailed,
    DeviceInstalled,
    DeviceJoined,
    DeviceLeft,
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
    WaitForApproval,
)
from control_plane.core.rollout_spec import parse_spec

T0 = 1_764_374_400.0  # 2025-11-29 00:00 UTC


def make(n: int = 4, **overrides: Any) -> tuple[Rollout, list[Action]]:
    data: dict[str, Any] = {
        "model": "m",
        "version": "2",
        "target": {"kind": "devices", "selector": {}},
        "waves": [{"count": 2}, {"percent": 100}],
        "bake_s": 10,
        "device_timeout_s": 60,
        "retries": 1,
        "min_finished": 1,
        "failure_threshold": 0.4,
        "success_threshold": 1.0,
        "disruption_budget": 10,
        "gates": {"error_rate": {"enabled": False}, "latency": {"enabled": False}},
    }
    data.update(overrides)
    devices = [TargetDevice(f"d{i}", "p", {"group": "g"}, "old") for i in range(n)]
    return start_rollout("r", parse_spec(data), devices, {"p": "new"}, T0)


def deploys(actions: list[Action]) -> list[str]:
    return [a.device_id for a in actions if isinstance(a, Deploy)]


def audits(actions: list[Action]) -> list[str]:
    return [a.action for a in actions if isinstance(a, Audit)]


def first_installing(r: Rollout) -> str:
    return next(d for d, s in sorted(r.devices.items()) if s.status == "installing")


def finish_wave(r: Rollout, now: float) -> tuple[Rollout, list[Action]]:
    actions: list[Action] = []
    for device_id, s in r.wave_devices(r.current):
        if s.status == "installing":
            r, more = step(r, DeviceInstalled(device_id), now)
            actions += more
    return r, actions


# ---- device events on an installing device ---------------------------------------------------

DeviceCase = tuple[Callable[[str], Event], int, str, list[str]]


@pytest.mark.parametrize(
    ("make_event", "retries", "status", "audit"),
    [
        (lambda d: DeviceInstalled(d), 1, "succeeded", []),
        (lambda d: DeviceFailed(d, "disk full"), 1, "failed", ["rollout.device_failed"]),
        (lambda d: DeviceSelfTestFailed(d, "vector 2"), 1, "failed", ["rollout.device_failed"]),
        (lambda d: DeviceTimedOut(d), 1, "installing", ["rollout.device_timed_out"]),  # retried
        (lambda d: DeviceTimedOut(d), 0, "timed_out", ["rollout.device_timed_out"]),
        (lambda d: DeviceWentSilent(d, T0), 1, "installing", []),
        (lambda d: DeviceLeft(d), 1, "installing", ["rollout.device_left"]),
    ],
)
def test_an_event_on_an_installing_device(
    make_event: Callable[[str], Event], retries: int, status: str, audit: list[str]
) -> None:
    r, _ = make(retries=retries, failure_threshold=0.9, success_threshold=0.1)
    device = first_installing(r)
    after, actions = step(r, make_event(device), T0 + 1)
    assert after.devices[device].status == status
    assert [a for a in audits(actions) if a.startswith("rollout.device")] == audit
    if isinstance(make_event(device), DeviceTimedOut) and retries:
        assert [a for a in actions if isinstance(a, Deploy)][0].attempt == 2
    if isinstance(make_event(device), DeviceSelfTestFailed):
        assert after.devices[device].reason == "self-test: vector 2"
        numbers = after.waves[0].gates[0]["numbers"]
        assert (numbers["failed"], numbers["self_test_failed"]) == (1, 1)


@pytest.mark.parametrize(
    ("setup", "event"),
    [
        ("succeeded", DeviceInstalled),
        ("succeeded", DeviceFailed),
        ("failed", DeviceInstalled),
        ("failed", DeviceTimedOut),
        ("queued", DeviceInstalled),  # never deployed: an answer to nothing
        ("unknown", DeviceInstalled),
        ("unknown", DeviceFailed),
    ],
)
def test_stale_or_duplicate_device_events_change_nothing(setup: str, event: type) -> None:
    r, _ = make(n=6, disruption_budget=1, failure_threshold=0.9, success_threshold=0.1)
    device = first_installing(r)
    if setup == "succeeded":
        r, _ = step(r, DeviceInstalled(device), T0 + 1)
    elif setup == "failed":
        r, _ = step(r, DeviceFailed(device), T0 + 1)
    elif setup == "queued":
        device = next(d for d, s in r.devices.items() if s.status == "queued")
    else:
        device = "stranger"
    r, _ = step(r, Tick(), T0 + 2)
    after, actions = step(r, event(device), T0 + 2)
    assert after.model_dump(exclude={"updated_at"}) == r.model_dump(exclude={"updated_at"})
    assert actions == []


def test_a_late_success_after_the_last_timeout_still_counts() -> None:
    r, _ = make(retries=0, success_threshold=0.1, failure_threshold=0.9)
    device, other = [d for d, _ in r.wave_devices(0)]
    r, _ = step(r, DeviceInstalled(other), T0 + 1)
    r, _ = step(r, Tick(), T0 + 60)
    assert r.devices[device].status == "timed_out"
    r, _ = step(r, DeviceInstalled(device), T0 + 61)
    assert r.devices[device].status == "succeeded"


def test_the_timeout_is_measured_from_the_deploy_and_bounded_by_retries() -> None:
    r, _ = make(retries=2, failure_threshold=0.9, success_threshold=0.1)
    device = first_installing(r)
    attempts = []
    for now in (T0 + 59, T0 + 60, T0 + 120, T0 + 180, T0 + 240):
        r, actions = step(r, Tick(), now)
        attempts += [a.attempt for a in actions if isinstance(a, Deploy) and a.device_id == device]
    assert attempts == [2, 3]
    assert r.devices[device].status == "timed_out" and r.devices[device].attempts == 3


# ---- operator commands by phase --------------------------------------------------------------


def in_phase(phase: str) -> Rollout:
    r, _ = make(n=2, waves=[{"percent": 100}], bake_s=0)
    if phase == "paused":
        r, _ = step(r, Pause("op"), T0)
    elif phase == "completed":
        r, _ = finish_wave(r, T0 + 1)
    elif phase == "aborted":
        r, _ = step(r, Abort("op"), T0)
    elif phase == "rolled_back":
        r, _ = step(r, RollbackRequested("op", "all"), T0)
    assert r.phase == phase
    return r


COMMANDS: dict[str, Event] = {
    "pause": Pause("op"),
    "resume": Resume("op"),
    "abort": Abort("op"),
    "rollback-wave": RollbackRequested("op", "wave"),
    "rollback-all": RollbackRequested("op", "all"),
    "approve": Approve("op"),
}


@pytest.mark.parametrize(
    ("phase", "command", "expected"),
    [
        ("running", "pause", "paused"),
        ("running", "resume", None),
        ("running", "abort", "aborted"),
        ("running", "rollback-wave", "aborted"),
        ("running", "rollback-all", "rolled_back"),
        ("running", "approve", None),
        ("paused", "pause", None),
        ("paused", "resume", "running"),
        ("paused", "abort", "aborted"),
        ("paused", "rollback-all", "rolled_back"),
        ("paused", "approve", None),
        ("completed", "pause", None),
        ("completed", "abort", None),
        ("completed", "rollback-all", "rolled_back"),
        ("aborted", "resume", None),
        ("aborted", "rollback-all", "rolled_back"),
        ("rolled_back", "rollback-all", None),
        ("rolled_back", "abort", None),
    ],
)
def test_operator_commands_by_phase(phase: str, command: str, expected: str | None) -> None:
    r = in_phase(phase)
    if expected is None:
        with pytest.raises(RolloutConflict, match=f"is {phase}: cannot"):
            step(r, COMMANDS[command], T0 + 5)
        return
    after, actions = step(r, COMMANDS[command], T0 + 5)
    assert after.phase == expected
    if command.startswith("rollback"):
        touched = sorted(d for d, s in r.devices.items() if s.touched)
        assert sorted(a.device_id for a in actions if isinstance(a, Rollback)) == touched


def test_a_paused_rollout_deploys_nothing_until_resumed() -> None:
    r, _ = make(n=6, disruption_budget=1)
    r, _ = step(r, Pause("op"), T0)
    r, actions = step(r, DeviceInstalled(first_installing(r)), T0 + 1)
    assert deploys(actions) == []
    r, actions = step(r, Resume("op"), T0 + 2)
    assert len(deploys(actions)) == 1


# ---- waves -----------------------------------------------------------------------------------


def test_approval_before_the_first_wave_and_between_waves() -> None:
    r, actions = make(approve_first=True, approve_between=True)
    assert WaitForApproval(0) in actions and deploys(actions) == []
    r, actions = step(r, Approve("lead"), T0 + 1)
    assert len(deploys(actions)) == 2 and "rollout.approved" in audits(actions)
    r, _ = finish_wave(r, T0 + 2)
    r, actions = step(r, Tick(), T0 + 20)
    assert PromoteWave(0, 1) in actions and WaitForApproval(1) in actions
    assert deploys(actions) == [] and r.waves[1].status == "awaiting_approval"
    r, actions = step(r, Approve("lead"), T0 + 21)
    assert len(deploys(actions)) == 2


def test_a_wave_bakes_before_it_is_promoted() -> None:
    r, _ = make()
    r, actions = finish_wave(r, T0 + 5)
    assert r.waves[0].status == "baking" and r.waves[0].bake_until == T0 + 15
    assert "rollout.wave_baking" in audits(actions)
    r, actions = step(r, Tick(), T0 + 14.9)
    assert PromoteWave(0, 1) not in actions
    r, actions = step(r, Tick(), T0 + 15)
    assert PromoteWave(0, 1) in actions and len(deploys(actions)) == 2
    r, _ = finish_wave(r, T0 + 20)
    r, actions = step(r, Tick(), T0 + 30)
    assert PromoteWave(1, None) in actions and r.phase == "completed"


@pytest.mark.parametrize(
    ("policy", "phase", "rolled_back"),
    [
        ("pause", "paused", set()),
        ("abort-and-rollback-wave", "aborted", {1}),
        ("abort-and-rollback-all", "rolled_back", {0, 1}),
    ],
)
def test_failure_policies(policy: str, phase: str, rolled_back: set[int]) -> None:
    r, _ = make(n=4, on_failure=policy, failure_threshold=0.4, min_finished=2)
    r, _ = finish_wave(r, T0 + 1)
    r, _ = step(r, Tick(), T0 + 11)  # wave 0 passes, wave 1 starts
    second = [d for d, _ in r.wave_devices(1)]
    r, _ = step(r, DeviceFailed(second[0], "x"), T0 + 12)
    r, actions = step(r, DeviceFailed(second[1], "x"), T0 + 13)
    assert r.phase == phase and r.waves[1].status == "failed"
    assert "rollout.wave_failed" in audits(actions)
    rolled = {r.devices[a.device_id].wave for a in actions if isinstance(a, Rollback)}
    assert rolled == rolled_back
    assert all(a.to_package == "old" for a in actions if isinstance(a, Rollback))


def test_the_failure_threshold_waits_for_the_minimum_finished() -> None:
    r, _ = make(n=10, waves=[{"percent": 100}], min_finished=3, failure_threshold=0.5)
    ids = [d for d, _ in r.wave_devices(0)]
    r, _ = step(r, DeviceFailed(ids[0]), T0 + 1)
    r, _ = step(r, DeviceFailed(ids[1]), T0 + 1)
    assert r.phase == "running"  # 2 of 2 failed, but only 2 finished
    r, _ = step(r, DeviceFailed(ids[2]), T0 + 1)
    assert r.phase == "aborted"
    wave_failed = r.waves[0].gates[0]
    assert wave_failed["numbers"]["finished"] == 3 and wave_failed["verdict"] == "fail"


def test_resume_after_a_failed_gate_bakes_again_on_fresh_readings() -> None:
    r, _ = make(n=4, on_failure="pause", waves=[{"percent": 100}], bake_s=0, **_errors_on())
    r, _ = finish_wave(r, T0 + 1)
    r, _ = step(r, GateReadingsArrived(0, _readings(T0 + 2, failures=100)), T0 + 2)
    assert r.phase == "paused" and "error_rate" in (r.reason or "")
    r, _ = step(r, Resume("op"), T0 + 3)
    assert r.phase == "running" and r.waves[0].readings is None
    r, _ = step(r, GateReadingsArrived(0, _readings(T0 + 4, failures=100)), T0 + 4)
    assert r.phase == "paused"  # still bad: paused again
    r, _ = step(r, Resume("op"), T0 + 5)
    r, actions = step(r, GateReadingsArrived(0, _readings(T0 + 6, failures=1)), T0 + 6)
    assert r.phase == "completed" and PromoteWave(0, None) in actions


def _errors_on() -> dict[str, Any]:
    return {"gates": {"error_rate": {"min_requests": 100}, "latency": {"enabled": False}}}


def _readings(at: float, failures: int) -> WaveReadings:
    return WaveReadings(at, VersionStats(1000, failures, 5.0), VersionStats(1000, 5, 5.0))


def test_readings_before_the_bake_ended_do_not_pass_and_older_ones_are_ignored() -> None:
    r, _ = make(n=2, waves=[{"percent": 100}], **_errors_on())
    r, _ = finish_wave(r, T0 + 1)
    r, _ = step(r, GateReadingsArrived(0, _readings(T0 + 5, failures=1)), T0 + 5)
    r, actions = step(r, Tick(), T0 + 30)
    assert r.phase == "running" and actions == []  # good, but measured mid-bake
    r, _ = step(r, GateReadingsArrived(0, _readings(T0 + 31, failures=1)), T0 + 31)
    assert r.phase == "completed"
    r, _ = step(r, GateReadingsArrived(0, _readings(T0 + 2, failures=900)), T0 + 32)
    assert r.waves[0].readings is not None and r.waves[0].readings["at"] == T0 + 31


def test_a_gate_pending_past_the_deadline_fails_the_wave() -> None:
    overrides = _errors_on()
    overrides["gates"]["pending_deadline_s"] = 100
    r, _ = make(n=2, waves=[{"percent": 100}], **overrides)
    r, _ = finish_wave(r, T0 + 1)
    r, _ = step(r, Tick(), T0 + 110)
    assert r.phase == "running"
    r, _ = step(r, Tick(), T0 + 111)
    assert r.phase == "aborted" and "deadline" in (r.reason or "")


def test_silent_devices_fail_the_availability_gate() -> None:
    r, _ = make(n=2, waves=[{"percent": 100}], bake_s=600)
    ids = [d for d, _ in r.wave_devices(0)]
    r, _ = finish_wave(r, T0 + 1)
    r, _ = step(r, DeviceWentSilent(ids[0], since=T0 + 2), T0 + 2)
    r, _ = step(r, DeviceSeen(ids[0]), T0 + 100)
    r, _ = step(r, Tick(), T0 + 400)
    assert r.phase == "running"  # seen again: not silent
    r, _ = step(r, DeviceWentSilent(ids[1], since=T0 + 401), T0 + 401)
    r, _ = step(r, Tick(), T0 + 701)
    assert r.phase == "aborted" and "availability" in (r.reason or "")


def test_empty_waves_are_passed_over() -> None:
    r, _ = make(n=1, waves=[{"count": 1}, {"count": 3}, {"percent": 100}], bake_s=0)
    r, actions = finish_wave(r, T0 + 1)
    assert r.phase == "completed"
    assert [a for a in actions if isinstance(a, PromoteWave)] == [
        PromoteWave(0, 1),
        PromoteWave(1, 2),
        PromoteWave(2, None),
    ]


def test_the_disruption_budget_counts_other_rollouts_too() -> None:
    r, actions = make(n=6, waves=[{"percent": 100}], disruption_budget=3)
    assert len(deploys(actions)) == 3
    r, actions = step(r, DeviceInstalled(first_installing(r)), T0 + 1)
    assert len(deploys(actions)) == 1
    r, actions = step(r, Tick(busy_elsewhere=3), T0 + 2)
    r, actions = step(r, DeviceInstalled(first_installing(r)), T0 + 3)
    assert deploys(actions) == []  # 2 here + 3 elsewhere already fill 3


def test_a_closed_maintenance_window_holds_deploys_until_it_opens() -> None:
    night = {"windows": {"g": [{"start": "02:00", "end": "04:00"}]}}
    r, actions = make(maintenance=night)  # T0 is 00:00 UTC
    assert deploys(actions) == []
    r, actions = step(r, Tick(), T0 + 2 * 3600)
    assert len(deploys(actions)) == 2


def test_a_device_already_on_the_package_counts_without_a_deploy() -> None:
    spec = parse_spec({"model": "m", "version": "2", "waves": [{"percent": 100}],
                       "target": {"kind": "devices"}, "bake_s": 0,
                       "gates": {"error_rate": {"enabled": False},
                                 "latency": {"enabled": False}}})  # fmt: skip
    devices = [TargetDevice("a", "p", {}, "new"), TargetDevice("b", "p", {}, "old")]
    r, actions = start_rollout("r", spec, devices, {"p": "new"}, T0)
    assert deploys(actions) == ["b"] and r.devices["a"].status == "succeeded"


# ---- joins and leaves ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tail", "profile", "labels", "status"),
    [
        (False, "p", {}, None),
        (True, "p", {}, "installing"),
        (True, "jetson", {}, "skipped"),
        (True, "p", {"site": "elsewhere"}, None),
    ],
)
def test_a_joining_device(
    tail: bool, profile: str, labels: dict[str, str], status: str | None
) -> None:
    r, _ = make(n=2, waves=[{"percent": 100}], dynamic_tail=tail, target={
        "kind": "devices", "selector": {"site": "lab"} if labels else {}})  # fmt: skip
    joiner = TargetDevice("late", profile, labels, "old")
    after, actions = step(r, DeviceJoined(joiner), T0 + 1)
    assert (after.devices["late"].status if "late" in after.devices else None) == status
    assert deploys(actions) == (["late"] if status == "installing" else [])


def test_a_device_that_left_is_not_counted_nor_deployed() -> None:
    r, _ = make(n=3, waves=[{"percent": 100}], disruption_budget=1, bake_s=0)
    ids = [d for d, _ in r.wave_devices(0)]
    r, _ = step(r, DeviceLeft(ids[1]), T0 + 1)
    r, _ = step(r, DeviceInstalled(ids[0]), T0 + 2)
    assert r.devices[ids[1]].status == "queued"
    r, _ = step(r, DeviceInstalled(ids[2]), T0 + 3)
    assert r.phase == "completed"  # 2 of 2 counted devices succeeded
    assert r.devices[ids[1]].attempts == 0


def test_step_does_not_change_its_input() -> None:
    r, _ = make()
    before = r.model_dump()
    step(r, DeviceInstalled(first_installing(r)), T0 + 1)
    step(r, RollbackRequested("op", "all"), T0 + 1)
    assert r.model_dump() == before


def test_a_device_that_left_before_its_wave_and_rejoins_later_gets_the_current_wave() -> None:
    waves = [{"count": 1}, {"count": 1}, {"percent": 100}]
    r, _ = make(n=4, waves=waves, dynamic_tail=True, bake_s=0)
    late = [d for d, _ in r.wave_devices(1)][0]
    r, _ = step(r, DeviceLeft(late), T0)
    r, _ = finish_wave(r, T0 + 1)  # wave 0 passes; wave 1, empty without it, is passed over
    r, _ = finish_wave(r, T0 + 2)
    assert r.phase == "completed" and r.devices[late].attempts == 0
    r, actions = step(r, DeviceJoined(TargetDevice(late, "p", {"group": "g"}, "old")), T0 + 3)
    assert deploys(actions) == [late] and r.devices[late].wave == 2


def test_the_summary_counts_each_wave_for_status_and_watch() -> None:
    r, _ = make(n=5, waves=[{"count": 2}, {"percent": 100}])
    first = [d for d, _ in r.wave_devices(0)]
    r, _ = step(r, DeviceInstalled(first[0]), T0 + 1)
    r, _ = step(r, DeviceLeft(first[1]), T0 + 1)
    view = summary(r)
    assert view["phase"] == "running" and view["current_wave"] == 0
    assert view["waves"][0]["devices"]["succeeded"] == 1
    assert view["waves"][0]["devices"]["left"] == 1
    assert view["waves"][1]["devices"]["queued"] == 3
    # the one device still counted succeeded: the wave bakes, its install gate passes
    assert view["waves"][0]["status"] == "baking"
    assert view["waves"][0]["gates"]["install"] == "pass"
    assert json.loads(json.dumps(view)) == view
