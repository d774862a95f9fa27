"""``step_many``: one copy of the state per batch, the same result as ``step`` one by one."""

from __future__ import annotations

import random

import pytest

from control_plane.core.rollout import start_rollout, step, step_many
from control_plane.core.rollout_model import (
    DeviceFailed,
    DeviceInstalled,
    DeviceJoined,
    DeviceLeft,
    DeviceSeen,
    DeviceSelfTestFailed,
    DeviceTimedOut,
    DeviceWentSilent,
    Event,
    Resume,
    Rollout,
    TargetDevice,
    Tick,
)
from control_plane.core.rollout_spec import parse_spec
from control_plane.errors import Conflict

NOW = 1_700_000_000.0


def _started(dynamic_tail: bool) -> Rollout:
    spec = parse_spec(
        {
            "model": "digits",
            "version": "2",
            "target": {"kind": "devices", "selector": {"site": "lab"}},
            "waves": [{"count": 2}, {"percent": 40}, {"percent": 100}],
            "bake_s": 0,
            "device_timeout_s": 30,
            "disruption_budget": 5,
            "min_finished": 1,
            "dynamic_tail": dynamic_tail,
            "gates": {"error_rate": {"enabled": False}, "latency": {"enabled": False}},
        }
    )
    devices = [TargetDevice(f"d{i:02d}", "x86", {"site": "lab"}) for i in range(12)]
    rollout, _ = start_rollout("r", spec, devices, {"x86": "sha"}, NOW)
    return rollout


def _events(rng: random.Random, count: int) -> list[Event]:
    ids = [f"d{i:02d}" for i in range(14)]  # two unknown to the rollout: joiners or ignored
    makers = [
        lambda d: DeviceInstalled(d),
        lambda d: DeviceFailed(d, "disk full"),
        lambda d: DeviceSelfTestFailed(d, "vectors"),
        lambda d: DeviceTimedOut(d),
        lambda d: DeviceLeft(d),
        lambda d: DeviceJoined(TargetDevice(d, "x86", {"site": "lab"})),
        lambda d: DeviceWentSilent(d, NOW),
        lambda d: DeviceSeen(d),
        lambda d: Tick(rng.randint(0, 3)),
    ]
    weights = [8, 1, 1, 1, 1, 1, 1, 1, 2]
    return [rng.choices(makers, weights)[0](rng.choice(ids)) for _ in range(count)]


@pytest.mark.parametrize("seed", range(40))
def test_a_batch_ends_where_stepping_one_by_one_ends(seed: int) -> None:
    rng = random.Random(seed)
    state = _started(dynamic_tail=seed % 2 == 0)
    before = state.to_dict()
    for batch_no in range(4):  # batches at later times, as ticks come
        now = NOW + 10 * batch_no
        events = _events(rng, rng.randint(0, 25))
        one_by_one, expected = state, []
        for event in events:
            one_by_one, more = step(one_by_one, event, now)
            expected += more
        batched, actions = step_many(state, events, now)
        assert batched.to_dict() == one_by_one.to_dict()
        assert actions == expected
        assert state.to_dict() == before  # the input is never changed
        state, before = batched, batched.to_dict()


def test_a_command_out_of_place_leaves_the_state_unchanged() -> None:
    state = _started(dynamic_tail=False)
    before = state.to_dict()
    with pytest.raises(Conflict, match="cannot resume"):
        step_many(state, [DeviceInstalled("d00"), Resume("op")], NOW)
    assert state.to_dict() == before
