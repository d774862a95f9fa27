"""Lifecycle transitions of model versions (pure)."""

from __future__ import annotations

import pytest

from control_plane.core.lifecycle import (
    STAGES,
    TRANSITIONS,
    allowed_transitions,
    check_transition,
    is_deployable,
)
from control_plane.errors import Conflict, InvalidInput, LifecycleError


def test_the_happy_path_is_allowed_step_by_step() -> None:
    path = ["registered", "compiled", "staged", "production", "deprecated", "retired"]
    for current, target in zip(path, path[1:], strict=False):
        assert check_transition(current, target) == target


@pytest.mark.parametrize(
    ("current", "target"),
    [
        ("registered", "production"),
        ("compiled", "production"),
        ("production", "retired"),
        ("production", "staged"),
        ("retired", "production"),
        ("staged", "staged"),
    ],
)
def test_a_bad_transition_names_both_stages(current: str, target: str) -> None:
    with pytest.raises(LifecycleError, match=f"{current} → {target}") as caught:
        check_transition(current, target)
    assert (caught.value.current, caught.value.target) == (current, target)
    assert isinstance(caught.value, Conflict)


def test_the_error_lists_what_is_allowed_or_says_final() -> None:
    with pytest.raises(LifecycleError, match="allowed from production: deprecated"):
        check_transition("production", "retired")
    with pytest.raises(LifecycleError, match="retired is final"):
        check_transition("retired", "deprecated")


def test_unknown_stages_are_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="'shipped'"):
        check_transition("shipped", "retired")
    with pytest.raises(InvalidInput, match="'gone'"):
        check_transition("registered", "gone")


def test_rollback_and_demotion_paths() -> None:
    assert "production" in allowed_transitions("deprecated")
    assert "compiled" in allowed_transitions("staged")


def test_every_stage_has_rules() -> None:
    assert set(TRANSITIONS) == set(STAGES)
    assert all(targets <= set(STAGES) for targets in TRANSITIONS.values())
    assert [s for s in STAGES if is_deployable(s)] == [
        "compiled",
        "staged",
        "production",
        "deprecated",
    ]
