"""What an operator asks of a rollout: the spec, validated (pure, no I/O).

A rollout deploys one model version to a *target* in ordered *waves*:

- ``target.kind == "devices"``: the devices whose labels match ``selector``
  (equality on every key, as ``DeviceRepo.list(labels=...)``). Each wave is a
  ``count`` of devices or a ``percent`` of the target (this wave's share, not a
  running total); the last wave takes whatever remains.
- ``target.kind == "alias"``: a function alias (``AliasRepo``); each wave is a
  ``traffic`` step, the percentage of requests the new version gets after it
  (Knative style, e.g. 10 → 50 → 100), strictly increasing and ending at 100.

Vocabulary borrowed where it fits: hawkBit's success / error thresholds per
group and its dynamic groups (``dynamic_tail``), AWS IoT Jobs' abort criteria
with ``minNumberOfExecutedThings`` (``min_finished``), per-execution timeout and
retries, Flagger's analysis (gates, ``pending_deadline_s`` ≈ progressDeadline).

Errors: :class:`RolloutSpecError` (an ``InvalidInput``) names the field, e.g.
``waves.1.percent``; :class:`RolloutBlocked` (a ``Conflict``) says why a valid
spec cannot start (profiles without a package).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from control_plane.errors import Conflict, InvalidInput

OnFailure = Literal["pause", "abort-and-rollback-wave", "abort-and-rollback-all"]


class RolloutSpecError(InvalidInput):
    """A rollout spec that does not validate; ``field`` is the first bad field's dotted path."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class RolloutBlocked(Conflict):
    """A valid spec that cannot start; ``profiles`` lists the profiles without a package."""

    def __init__(self, message: str, profiles: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.profiles = tuple(profiles)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DeviceTarget(_Frozen):
    kind: Literal["devices"] = "devices"
    selector: dict[str, str] = Field(default_factory=dict)
    """Label equality; an empty selector targets every active device."""

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(key) == value for key, value in self.selector.items())


class AliasTarget(_Frozen):
    kind: Literal["alias"] = "alias"
    alias: str = Field(min_length=1)


Target = Annotated[DeviceTarget | AliasTarget, Field(discriminator="kind")]


class WaveSpec(_Frozen):
    """One wave: exactly one of ``count``, ``percent`` (devices) or ``traffic`` (alias)."""

    name: str | None = None
    count: int | None = Field(default=None, ge=1)
    percent: float | None = Field(default=None, gt=0, le=100)
    traffic: int | None = Field(default=None, ge=1, le=100)

    @model_validator(mode="after")
    def _one_size(self) -> WaveSpec:
        given = [n for n in ("count", "percent", "traffic") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of count, percent, traffic (got {given or 'none'})")
        return self


def _minutes(text: str) -> int:
    hours, sep, minutes = text.partition(":")
    if not sep or not hours.isdigit() or not minutes.isdigit() or len(minutes) != 2:
        raise ValueError(f"{text!r}: expected HH:MM")
    value = int(hours) * 60 + int(minutes)
    if int(minutes) >= 60 or value > 24 * 60:
        raise ValueError(f"{text!r}: not a time of day")
    return value


class MaintenanceWindow(_Frozen):
    """A weekly window in UTC: ``days`` (0 = Monday) from ``start`` to ``end`` (HH:MM).

    ``end`` before ``start`` crosses midnight into the next day; ``start == end``
    is the whole day.
    """

    days: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6)
    start: str = "00:00"
    end: str = "24:00"

    @field_validator("days")
    @classmethod
    def _days(cls, days: tuple[int, ...]) -> tuple[int, ...]:
        if not days or any(d < 0 or d > 6 for d in days):
            raise ValueError("days: one or more of 0 (Monday) .. 6 (Sunday)")
        return tuple(sorted(set(days)))

    @field_validator("start", "end")
    @classmethod
    def _time(cls, text: str) -> str:
        _minutes(text)
        return text

    def in_window(self, now: float) -> bool:
        """Whether ``now`` (seconds since the epoch) falls in this window; no clock is read."""
        moment = datetime.fromtimestamp(now, tz=UTC)
        day, minute = moment.weekday(), moment.hour * 60 + moment.minute
        start, end = _minutes(self.start), _minutes(self.end)
        if start == end or (start == 0 and end == 24 * 60):
            return day in self.days
        if start < end:
            return day in self.days and start <= minute < end
        # crosses midnight: the evening part today, the morning part belongs to yesterday's window
        return (day in self.days and minute >= start) or (
            (day - 1) % 7 in self.days and minute < end
        )


class MaintenanceConfig(_Frozen):
    """Per device group (the value of label ``group_label``) its windows.

    A group without an entry uses ``default``; ``default=None`` means always open.
    """

    group_label: str = "group"
    windows: dict[str, tuple[MaintenanceWindow, ...]] = Field(default_factory=dict)
    default: tuple[MaintenanceWindow, ...] | None = None

    def is_open(self, group: str | None, now: float) -> bool:
        windows = self.windows.get(group, self.default) if group is not None else self.default
        return windows is None or any(w.in_window(now) for w in windows)


class ErrorRateGateConfig(_Frozen):
    enabled: bool = True
    min_requests: int = Field(default=100, ge=1)
    max_error_rate: float = Field(default=0.05, ge=0, le=1)
    """Absolute ceiling on the new version's error rate (the agent's health watch uses 0.05)."""
    max_increase: float = Field(default=0.02, ge=0, le=1)
    """Allowed increase over the previous version's rate on the same devices."""


class LatencyGateConfig(_Frozen):
    enabled: bool = True
    min_requests: int = Field(default=100, ge=1)
    max_ratio: float = Field(default=1.5, ge=1)
    slack_ms: float = Field(default=1.0, ge=0)
    """p95 may grow to ``max_ratio * previous p95 + slack_ms``."""
    max_p95_ms: float | None = Field(default=None, gt=0)
    """Absolute ceiling (Flagger's request-duration style), off by default."""


class DriftGateConfig(_Frozen):
    enabled: bool = False
    max_score: float = Field(default=0.2, gt=0)
    """PSI-style: 0.1 moderate, 0.2 significant shift."""
    min_samples: int = Field(default=1000, ge=1)


class AvailabilityGateConfig(_Frozen):
    enabled: bool = True
    silent_after_s: float = Field(default=300.0, gt=0)
    max_silent_fraction: float = Field(default=0.05, ge=0, le=1)


class GatesConfig(_Frozen):
    error_rate: ErrorRateGateConfig = ErrorRateGateConfig()
    latency: LatencyGateConfig = LatencyGateConfig()
    drift: DriftGateConfig = DriftGateConfig()
    availability: AvailabilityGateConfig = AvailabilityGateConfig()
    pending_deadline_s: float = Field(default=3600.0, ge=0)
    """After the bake, a gate still pending this long fails the wave as inconclusive."""


class RolloutSpec(_Frozen):
    model: str = Field(min_length=1)
    version: str = Field(min_length=1)
    target: Target
    waves: tuple[WaveSpec, ...] = Field(min_length=1, max_length=100)
    device_timeout_s: float = Field(default=600.0, gt=0)
    retries: int = Field(default=1, ge=0, le=10)
    """Re-deploys after a timeout (never after a reported failure)."""
    bake_s: float = Field(default=300.0, ge=0)
    success_threshold: float = Field(default=0.95, gt=0, le=1)
    """Share of a wave's devices that must succeed before it may be promoted."""
    failure_threshold: float = Field(default=0.10, ge=0, lt=1)
    """Share of failed (or timed out) among finished devices that fails the wave..."""
    min_finished: int = Field(default=5, ge=1)
    """...once at least this many of its devices have finished."""
    on_failure: OnFailure = "abort-and-rollback-wave"
    approve_first: bool = False
    approve_between: bool = False
    disruption_budget: int = Field(default=50, ge=1)
    """At most this many devices installing at once across the fleet."""
    maintenance: MaintenanceConfig | None = None
    dynamic_tail: bool = False
    """Devices joining the target while the rollout runs (or after it completed) get it."""
    gates: GatesConfig = GatesConfig()

    @model_validator(mode="after")
    def _waves_fit_target(self) -> RolloutSpec:
        alias = self.target.kind == "alias"
        for i, wave in enumerate(self.waves):
            if alias and wave.traffic is None:
                raise ValueError(f"waves.{i}: an alias target moves by traffic steps")
            if not alias and wave.traffic is not None:
                raise ValueError(
                    f"waves.{i}.traffic: only for an alias target (use count or percent)"
                )
        if alias:
            steps = [w.traffic or 0 for w in self.waves]
            if any(b <= a for a, b in zip(steps, steps[1:], strict=False)) or steps[-1] != 100:
                raise ValueError(f"waves: traffic steps must increase and end at 100 (got {steps})")
        return self


def _field_path(error: Mapping[str, Any]) -> str:
    loc = [str(part) for part in error.get("loc", ())]
    # a union member's tag ("devices"/"alias") is noise in the path
    path = ".".join(p for p in loc if p not in {"devices", "alias"})
    if not path:  # a check across fields names its field at the start of its message
        head = _message(error).split(":", 1)[0]
        path = head if head and " " not in head else "spec"
    return path


def _message(error: Mapping[str, Any]) -> str:
    return str(error.get("msg", "invalid")).removeprefix("Value error, ")


def parse_spec(data: Mapping[str, Any]) -> RolloutSpec:
    """Validate a JSON-shaped spec; RolloutSpecError names every bad field."""
    try:
        return RolloutSpec.model_validate(dict(data))
    except ValidationError as exc:
        errors = exc.errors()
        parts = []
        for error in errors:
            path, message = _field_path(error), _message(error)
            parts.append(message if message.startswith(path) else f"{path}: {message}")
        raise RolloutSpecError(_field_path(errors[0]), "rollout spec: " + "; ".join(parts)) from exc
