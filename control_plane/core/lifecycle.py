"""The lifecycle of a model version: which stage may follow which (pure, no I/O).

registered → compiled → staged → production → deprecated → retired

- ``compiled``: packages exist for at least one profile;
- ``staged`` may go back to ``compiled`` (staging found a problem) or on to
  ``production``; a ``deprecated`` version may be promoted to ``production``
  again (a rollback to it);
- any stage but ``production`` may be ``retired`` (retire a production version
  by deprecating it first, once another one serves); ``retired`` is final.

The store moves a stage by compare-and-set (``VersionRepo.set_stage``); this
module decides whether the move is allowed at all.
"""

from __future__ import annotations

from collections.abc import Mapping

from control_plane.errors import InvalidInput, LifecycleError

STAGES = ("registered", "compiled", "staged", "production", "deprecated", "retired")

TRANSITIONS: Mapping[str, frozenset[str]] = {
    "registered": frozenset({"compiled", "retired"}),
    "compiled": frozenset({"staged", "retired"}),
    "staged": frozenset({"compiled", "production", "retired"}),
    "production": frozenset({"deprecated"}),
    "deprecated": frozenset({"production", "retired"}),
    "retired": frozenset(),
}

DEPLOYABLE = frozenset({"compiled", "staged", "production", "deprecated"})


def _check_stage(stage: str) -> str:
    if stage not in TRANSITIONS:
        raise InvalidInput(f"stage {stage!r}: expected one of {list(STAGES)}")
    return stage


def allowed_transitions(current: str) -> frozenset[str]:
    return TRANSITIONS[_check_stage(current)]


def check_transition(current: str, target: str) -> str:
    """``target`` when the move from ``current`` is allowed; LifecycleError naming it if not."""
    allowed = allowed_transitions(current)
    _check_stage(target)
    if target not in allowed:
        hint = (
            f"allowed from {current}: {', '.join(sorted(allowed))}"
            if allowed
            else (f"{current} is final")
        )
        raise LifecycleError(current, target, f"cannot move {current} → {target} ({hint})")
    return target


def is_deployable(stage: str) -> bool:
    """Whether a version in ``stage`` may be sent to devices."""
    return _check_stage(stage) in DEPLOYABLE
