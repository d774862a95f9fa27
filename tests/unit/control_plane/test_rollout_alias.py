"""A function alias as the target: traffic steps with the same gates, and the way back."""

from __future__ import annotations

from typing import Any

import pytest
from rollout_sim import make_sim

from control_plane.core.rollout import start_rollout, step
from control_plane.core.rollout_gates import VersionStats, WaveReadings
from control_plane.core.rollout_model import (
    Action,
    DeviceInstalled,
    DeviceJoined,
    GateReadingsArrived,
    PointAlias,
    PromoteWave,
    RollbackRequested,
    Rollout,
    SetTraffic,
    TargetDevice,
    Tick,
)
from control_plane.core.rollout_spec import RolloutSpec, parse_spec

T0 = 1_764_374_400.0


def alias_spec(**overrides: Any) -> RolloutSpec:
    data: dict[str, Any] = {
        "model": "digits",
        "version": "2",
        "target": {"kind": "alias", "alias": "prod"},
        "waves": [{"traffic": 10}, {"traffic": 50}, {"traffic": 100}],
        "bake_s": 60,
    }
    data.update(overrides)
    return parse_spec(data)


def moves(actions: list[Action]) -> list[tuple[int, str | None]]:
    return [(a.percent, a.previous_version) for a in actions if isinstance(a, SetTraffic)]


def good(at: float) -> WaveReadings:
    return WaveReadings(at, VersionStats(5000, 10, 4.0), VersionStats(5000, 10, 4.0))


def bad(at: float) -> WaveReadings:
    return WaveReadings(at, VersionStats(5000, 600, 4.0), VersionStats(5000, 10, 4.0))


def advance(r: Rollout, now: float, readings: WaveReadings) -> tuple[Rollout, list[Action]]:
    return step(r, GateReadingsArrived(r.current, readings), now)


def test_traffic_moves_10_50_100_then_the_alias_points_at_the_new_version() -> None:
    r, actions = start_rollout("a1", alias_spec(), [], {}, T0, previous_version="1")
    assert moves(actions) == [(10, "1")] and r.traffic == 10
    r, actions = advance(r, T0 + 30, good(T0 + 30))
    assert moves(actions) == []  # baking: 60 s at 10%
    r, actions = advance(r, T0 + 60, good(T0 + 60))
    assert PromoteWave(0, 1) in actions and moves(actions) == [(50, "1")]
    r, actions = advance(r, T0 + 120, good(T0 + 120))
    assert moves(actions) == [(100, "1")]
    r, actions = advance(r, T0 + 180, good(T0 + 180))
    assert r.phase == "completed" and PointAlias("digits", "prod", "2") in actions


@pytest.mark.parametrize(
    ("policy", "phase", "back"),
    [
        ("abort-and-rollback-wave", "aborted", [(0, "1")]),
        ("abort-and-rollback-all", "rolled_back", [(0, "1")]),
        ("pause", "paused", []),
    ],
)
def test_a_failed_gate_sends_all_traffic_back_to_the_previous_version(
    policy: str, phase: str, back: list[tuple[int, str | None]]
) -> None:
    r, _ = start_rollout("a1", alias_spec(on_failure=policy), [], {}, T0, previous_version="1")
    r, _ = advance(r, T0 + 60, good(T0 + 60))
    assert r.traffic == 50
    r, actions = advance(r, T0 + 70, bad(T0 + 70))  # fails mid-bake: no need to wait
    assert r.phase == phase and moves(actions) == back
    assert r.traffic == (0 if back else 50)
    assert "error_rate" in (r.waves[1].reason or "")
    assert not any(isinstance(a, PointAlias) for a in actions)


def test_an_operator_rollback_of_an_alias_moves_traffic_back() -> None:
    r, _ = start_rollout("a1", alias_spec(), [], {}, T0, previous_version="1")
    r, actions = step(r, RollbackRequested("ops", "all"), T0 + 5)
    assert moves(actions) == [(0, "1")] and r.phase == "rolled_back"


def test_thin_function_telemetry_keeps_the_step_pending_until_the_deadline() -> None:
    spec = alias_spec(gates={"pending_deadline_s": 300})
    r, _ = start_rollout("a1", spec, [], {}, T0, previous_version="1")
    thin = WaveReadings(T0 + 100, VersionStats(20, 0, 4.0), VersionStats(5000, 10, 4.0))
    r, _ = advance(r, T0 + 100, thin)
    assert r.phase == "running" and r.traffic == 10
    r, actions = step(r, Tick(), T0 + 360)
    assert r.phase == "aborted" and moves(actions) == [(0, "1")]


def test_device_events_do_not_apply_to_an_alias() -> None:
    r, _ = start_rollout("a1", alias_spec(dynamic_tail=True), [], {}, T0, previous_version="1")
    joined, actions = step(r, DeviceJoined(TargetDevice("d1", "p", {}, None)), T0 + 1)
    assert joined.devices == {} and actions == []
    after, actions = step(r, DeviceInstalled("d1"), T0 + 1)
    assert after.devices == {} and actions == []


def test_the_runner_reads_function_telemetry_for_the_alias() -> None:
    sim = make_sim(requests=1000)
    sim.runner.create("a1", alias_spec(), [], {}, previous_version="1")
    final = sim.run("a1", dt=20)
    assert final.phase == "completed"
    assert [m.percent for m in sim.traffic.moves] == [10, 50, 100]
    assert sim.traffic.pointed == [PointAlias("digits", "prod", "2")]
    assert {subjects for _, subjects in sim.readings.asked} == {("prod",)}


def test_the_runner_moves_traffic_back_when_the_new_version_errs() -> None:
    sim = make_sim(requests=1000, new_error_rate=0.2)
    sim.runner.create("a1", alias_spec(), [], {}, previous_version="1")
    final = sim.run("a1", dt=20)
    assert final.phase == "aborted"
    assert [(m.percent, m.previous_version) for m in sim.traffic.moves] == [(10, "1"), (0, "1")]
    assert sim.traffic.pointed == []
