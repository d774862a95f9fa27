"""Properties of an alias rollout (hypothesis): the split the engine's actions produce.

Random traffic steps, policies and approvals; random readings around the limits, time
passing and operator commands (out of place ones included). The actions are applied
to a split the way the control plane does (``traffic_split``), and checked against
oracles written here:

1. the split always sums to 100 over at most the two versions;
2. the new version never gets more than the step of a wave whose predecessors all
   passed; a wave passes only after its bake, on readings taken after it, within the
   limits (error rate <= previous 1% + 2 points, p95 <= 1.5 x 4 ms + 1 ms, >= 100 requests);
3. a rollback policy or an operator's rollback leaves 0% on the new version;
4. the alias points at the new version for good only when every wave passed;
5. a restart (state → JSON → state) at any step changes neither actions nor state.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from control_plane.core.function_alias import traffic_split
from control_plane.core.rollout import start_rollout, step
from control_plane.core.rollout_gates import VersionStats, WaveReadings
from control_plane.core.rollout_handlers import RolloutConflict
from control_plane.core.rollout_model import (
    Abort,
    Action,
    Approve,
    Event,
    GateReadingsArrived,
    Pause,
    PointAlias,
    Resume,
    RollbackRequested,
    Rollout,
    SetTraffic,
    Tick,
)
from control_plane.core.rollout_spec import parse_spec

T0 = 1_764_374_400.0
BAKE = 60.0


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    steps = sorted(draw(st.sets(st.integers(1, 99), min_size=0, max_size=4))) + [100]
    return {
        "model": "digits",
        "version": "2",
        "target": {"kind": "alias", "alias": "fn:live"},
        "waves": [{"traffic": t} for t in steps],
        "bake_s": BAKE,
        "on_failure": draw(
            st.sampled_from(["pause", "abort-and-rollback-wave", "abort-and-rollback-all"])
        ),  # fmt: skip
        "approve_first": draw(st.booleans()),
        "approve_between": draw(st.booleans()),
        "gates": {"pending_deadline_s": 600},
    }


def readings() -> st.SearchStrategy[tuple[int, int, float]]:
    # (new requests, new failures, new p95) around the limits: 5% and 1.5 x 4 ms + 1 ms
    return st.tuples(st.integers(0, 400), st.integers(0, 40), st.sampled_from([4.0, 6.9, 7.1]))


EVENTS = st.one_of(
    st.tuples(st.just("readings"), readings()),
    st.tuples(st.just("wait"), st.floats(1, 200)),
    st.tuples(st.sampled_from(["pause", "resume", "abort", "rollback", "approve"]), st.none()),
)


def _event(kind: str, arg: Any, r: Rollout, now: float) -> Event:
    if kind == "readings":
        requests, failures, p95 = arg
        new = VersionStats(requests, min(failures, requests), p95)
        return GateReadingsArrived(r.current, WaveReadings(now, new, VersionStats(5000, 50, 4.0)))
    commands: dict[str, Event] = {
        "pause": Pause("op"),
        "resume": Resume("op"),
        "abort": Abort("op"),
        "rollback": RollbackRequested("op", "all"),
        "approve": Approve("op"),
    }
    return commands.get(kind, Tick())


def _apply(split: dict[str, int], actions: list[Action]) -> dict[str, int]:
    for action in actions:
        if isinstance(action, SetTraffic):
            split = traffic_split(action.version, action.percent, action.previous_version)
        elif isinstance(action, PointAlias):
            split = {action.version: 100}
    return split


@settings(max_examples=300, deadline=None)
@given(specs(), st.lists(EVENTS, min_size=5, max_size=40))
def test_the_split_follows_the_gates(spec_data: dict[str, Any], events: list[Any]) -> None:
    spec = parse_spec(spec_data)
    steps = [w.traffic or 0 for w in spec.waves]
    now = T0
    r, actions = start_rollout("r1", spec, [], {}, now, previous_version="1")
    split = _apply({"1": 100}, actions)
    rolled_back = False
    for kind, arg in events:
        if kind == "wait":
            now += arg
        try:
            after, actions = step(r, _event(kind, arg, r, now), now)
        except RolloutConflict:
            continue
        again, replayed = step(Rollout.from_dict(r.to_dict()), _event(kind, arg, r, now), now)
        assert replayed == actions and again.to_dict() == after.to_dict()  # (5)
        before = {w.index for w in r.waves if w.status == "passed"}
        r = after
        split = _apply(split, actions)
        assert sum(split.values()) == 100 and set(split) <= {"1", "2"}  # (1)
        rolled_back |= any(isinstance(a, SetTraffic) and a.percent == 0 for a in actions)
        passed = [w.index for w in r.waves if w.status == "passed"]
        assert passed == list(range(len(passed)))  # waves pass in order, none skipped
        for index in set(passed) - before:  # (2) passing now: bake over, readings in limits
            wave = r.waves[index]
            assert wave.finished_at is not None and wave.finished_at >= (wave.bake_until or 0)
            got = WaveReadings.from_dict(wave.readings or {})
            assert got.at >= (wave.bake_until or 0) and got.new.requests >= 100
            assert got.new.error_rate <= 0.01 + 0.02 and (got.new.p95_ms or 99) <= 4.0 * 1.5 + 1
        allowed = steps[len(passed)] if len(passed) < len(steps) else 100
        assert split.get("2", 0) <= allowed  # (2): never past the first unpassed wave's step
        failed = [w for w in r.waves if w.status == "failed"]
        if failed and r.phase in ("aborted", "rolled_back") and spec.on_failure != "pause":
            assert split.get("2", 0) == 0  # (3)
        if r.phase == "rolled_back":
            assert split == {"1": 100}  # (3)
        if any(isinstance(a, PointAlias) for a in actions):
            assert r.phase == "completed" and len(passed) == len(steps)  # (4)
            assert split == {"2": 100}
    if rolled_back:
        assert split == {"1": 100} and r.phase in ("aborted", "rolled_back")  # stays back
