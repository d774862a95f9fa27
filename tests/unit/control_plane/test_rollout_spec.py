"""The rollout spec: validation naming the field, maintenance windows, wave assignment, packages."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import pytest

from control_plane.core.rollout_spec import (
    MaintenanceConfig,
    MaintenanceWindow,
    RolloutBlocked,
    RolloutSpecError,
    WaveSpec,
    parse_spec,
)
from control_plane.core.waves import assign_waves, device_rank, packages_for, wave_sizes
from control_plane.errors import Conflict, InvalidInput

BASE: dict[str, Any] = {
    "model": "digits",
    "version": "2",
    "target": {"kind": "devices", "selector": {"site": "lab"}},
    "waves": [{"count": 1}, {"percent": 100}],
}


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_defaults_fill_a_minimal_spec() -> None:
    spec = parse_spec(BASE)
    assert (spec.retries, spec.on_failure, spec.disruption_budget) == (
        1,
        "abort-and-rollback-wave",
        50,
    )
    assert spec.gates.error_rate.enabled and not spec.gates.drift.enabled
    assert spec.target.kind == "devices" and spec.target.matches({"site": "lab", "x": "y"})
    assert not spec.target.matches({"site": "home"})


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"waves": []}, "waves"),
        ({"waves": [{"count": 0}]}, "waves.0.count"),
        ({"waves": [{"count": 1}, {"percent": 120}]}, "waves.1.percent"),
        ({"waves": [{"count": 1, "percent": 5}]}, "waves.0"),
        ({"waves": [{"traffic": 10}]}, "waves.0.traffic"),
        ({"retries": -1}, "retries"),
        ({"retries": 11}, "retries"),
        ({"failure_threshold": 1.0}, "failure_threshold"),
        ({"success_threshold": 0}, "success_threshold"),
        ({"min_finished": 0}, "min_finished"),
        ({"on_failure": "explode"}, "on_failure"),
        ({"disruption_budget": 0}, "disruption_budget"),
        ({"device_timeout_s": 0}, "device_timeout_s"),
        ({"model": ""}, "model"),
        ({"unknown": 1}, "unknown"),
        ({"gates": {"error_rate": {"max_error_rate": 2}}}, "gates.error_rate.max_error_rate"),
        (
            {"maintenance": {"windows": {"a": [{"start": "25:00"}]}}},
            "maintenance.windows.a.0.start",
        ),
        ({"maintenance": {"windows": {"a": [{"days": [7]}]}}}, "maintenance.windows.a.0.days"),
        ({"target": {"kind": "fleet"}}, "target"),
    ],
)
def test_a_bad_spec_names_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(RolloutSpecError) as caught:
        parse_spec({**BASE, **change})
    assert caught.value.field == field
    assert f"rollout spec: {field}" in str(caught.value)
    assert isinstance(caught.value, InvalidInput)


@pytest.mark.parametrize(
    ("waves", "ok"),
    [
        ([10, 50, 100], True),
        ([100], True),
        ([10, 10, 100], False),
        ([50, 10, 100], False),
        ([10, 50], False),
    ],
)
def test_alias_traffic_steps_increase_to_100(waves: list[int], ok: bool) -> None:
    data = {**BASE, "target": {"kind": "alias", "alias": "prod"}}
    data["waves"] = [{"traffic": t} for t in waves]
    if ok:
        assert [w.traffic for w in parse_spec(data).waves] == waves
    else:
        with pytest.raises(RolloutSpecError, match="traffic steps"):
            parse_spec(data)


def test_an_alias_target_refuses_device_waves() -> None:
    data = {**BASE, "target": {"kind": "alias", "alias": "prod"}}
    with pytest.raises(RolloutSpecError, match="waves.0: an alias target moves by traffic"):
        parse_spec(data)


@pytest.mark.parametrize(
    ("window", "moment", "inside"),
    [
        ({"start": "01:00", "end": "05:00"}, "2026-11-30T00:59", False),
        ({"start": "01:00", "end": "05:00"}, "2026-11-30T01:00", True),
        ({"start": "01:00", "end": "05:00"}, "2026-11-30T04:59", True),
        ({"start": "01:00", "end": "05:00"}, "2026-11-30T05:00", False),
        # 2026-11-30 is a Monday (0); the window is on Sundays (6) only
        ({"days": [6], "start": "01:00", "end": "05:00"}, "2026-11-30T02:00", False),
        ({"days": [6], "start": "01:00", "end": "05:00"}, "2026-11-29T02:00", True),
        # crossing midnight: Sunday 22:00 → Monday 02:00
        ({"days": [6], "start": "22:00", "end": "02:00"}, "2026-11-29T23:30", True),
        ({"days": [6], "start": "22:00", "end": "02:00"}, "2026-11-30T01:59", True),
        ({"days": [6], "start": "22:00", "end": "02:00"}, "2026-11-30T02:00", False),
        ({"days": [6], "start": "22:00", "end": "02:00"}, "2026-11-29T01:00", False),
        ({"days": [0]}, "2026-11-30T13:00", True),
        ({"days": [0], "start": "08:00", "end": "08:00"}, "2026-12-01T13:00", False),
    ],
)
def test_in_window(window: dict[str, Any], moment: str, inside: bool) -> None:
    assert MaintenanceWindow.model_validate(window).in_window(at(moment)) is inside


def test_maintenance_config_per_group_with_a_default() -> None:
    night = MaintenanceWindow(start="00:00", end="06:00")
    config = MaintenanceConfig(windows={"stores": (night,)})
    assert config.is_open("stores", at("2026-11-30T03:00"))
    assert not config.is_open("stores", at("2026-11-30T12:00"))
    assert config.is_open("factories", at("2026-11-30T12:00"))  # no entry, no default: open
    closed_by_default = MaintenanceConfig(windows={}, default=(night,))
    assert not closed_by_default.is_open(None, at("2026-11-30T12:00"))


@pytest.mark.parametrize(
    ("waves", "total", "sizes"),
    [
        ([{"count": 1}, {"percent": 100}], 10, [1, 9]),
        ([{"percent": 1}, {"percent": 10}, {"percent": 100}], 50, [1, 5, 44]),
        ([{"percent": 50}, {"count": 1}], 3, [2, 1]),
        ([{"count": 5}, {"count": 5}, {"count": 5}], 4, [4, 0, 0]),
        ([{"percent": 10}, {"percent": 100}], 0, [0, 0]),
        ([{"percent": 33.3}, {"percent": 33.3}, {"percent": 100}], 1000, [333, 333, 334]),
    ],
)
def test_wave_sizes_round_up_and_the_last_wave_takes_the_rest(
    waves: list[dict[str, Any]], total: int, sizes: list[int]
) -> None:
    assert wave_sizes([WaveSpec.model_validate(w) for w in waves], total) == sizes


def test_assignment_does_not_depend_on_order_and_survives_joins_and_leaves() -> None:
    waves = [WaveSpec(count=3), WaveSpec(count=3), WaveSpec(percent=100)]
    ids = [f"dev-{i}" for i in range(9)]
    first = assign_waves("r1", waves, ids)
    shuffled = ids[:]
    random.Random(7).shuffle(shuffled)
    assert assign_waves("r1", waves, shuffled) == first
    # ranks, not positions: a device keeps its rank whoever else is there
    assert all(device_rank("r1", d) == device_rank("r1", d) for d in ids)
    ranked = sorted(ids, key=lambda d: device_rank("r1", d))
    assert [d for d in ranked if first[d] == 0] == ranked[:3]
    assert assign_waves("r2", waves, ids) != first  # another rollout picks other canaries


def test_packages_follow_profiles_and_missing_ones_are_all_named() -> None:
    chosen = packages_for({"a": "x86", "b": "arm"}, {"x86": "sha-x", "arm": "sha-a"})
    assert chosen == {"a": "sha-x", "b": "sha-a"}
    with pytest.raises(RolloutBlocked) as caught:
        packages_for({"a": "x86", "b": "jetson", "c": "jetson", "d": None}, {"x86": "sha-x"})
    assert caught.value.profiles == ("(no profile)", "jetson")
    assert "jetson (2 devices)" in str(caught.value) and "(no profile) (1 device)" in str(
        caught.value
    )
    assert isinstance(caught.value, Conflict)
