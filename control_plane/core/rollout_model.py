"""The rollout's persisted state, the events it reacts to and the actions it asks for (pure).

State is a pydantic model that round-trips through a plain JSON-able dict
(:meth:`Rollout.to_dict` / :meth:`Rollout.from_dict`), so the runner keeps it
in the store and a restarted control plane continues from it. Events and
actions are frozen dataclasses; actions also round-trip through dicts
(:func:`action_to_dict` / :func:`action_from_dict`) for the runner's outbox.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from control_plane.core.rollout_gates import WaveReadings
from control_plane.core.rollout_spec import RolloutSpec

Phase = Literal["running", "paused", "completed", "aborted", "rolled_back"]
FINAL_PHASES = frozenset({"aborted", "rolled_back"})
WaveStatus = Literal["pending", "awaiting_approval", "deploying", "baking", "passed", "failed"]
DeviceStatus = Literal["queued", "installing", "succeeded", "failed", "timed_out", "skipped"]
TERMINAL = frozenset({"succeeded", "failed", "timed_out", "skipped"})


class _State(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=False)


class DeviceState(_State):
    wave: int
    rank: str
    profile_id: str | None = None
    group: str | None = None
    package: str | None = None
    """The package (sha256) this rollout brings it; None when skipped."""
    previous_package: str | None = None
    """What it ran before, the package a rollback returns it to."""
    status: DeviceStatus = "queued"
    attempts: int = 0
    deployed_at: float | None = None
    finished_at: float | None = None
    reason: str | None = None
    left: bool = False
    silent_since: float | None = None
    rolled_back: bool = False
    """A rollback was sent to it by this rollout."""
    rollback: Literal["sent", "done", "failed"] | None = None
    """That rollback's outcome as the device acked it (None: none was sent)."""
    rollback_reason: str | None = None
    reverted: bool = False
    """The device rolled itself back (its own health watch): failed, and owed no rollback."""

    @property
    def touched(self) -> bool:
        """A deploy was sent for this rollout (so a rollback may be owed)."""
        return self.attempts > 0


class WaveState(_State):
    index: int
    name: str | None = None
    status: WaveStatus = "pending"
    traffic: int | None = None
    started_at: float | None = None
    baking_since: float | None = None
    bake_until: float | None = None
    finished_at: float | None = None
    reason: str | None = None
    gates: list[dict[str, Any]] = []
    readings: dict[str, Any] | None = None


class Rollout(_State):
    id: str
    spec: RolloutSpec
    created_at: float
    phase: Phase = "running"
    current: int = 0
    waves: list[WaveState]
    devices: dict[str, DeviceState] = {}
    packages: dict[str, str] = {}
    """profile id → package sha256, kept for devices that join later."""
    previous_version: str | None = None
    """Alias target: where the alias pointed before, the version a rollback returns traffic to."""
    traffic: int = 0
    busy_elsewhere: int = 0
    """Devices installing for other rollouts, as last told by a Tick (disruption budget)."""
    reason: str | None = None
    updated_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Rollout:
        return cls.model_validate(dict(data))

    def wave_devices(self, index: int) -> list[tuple[str, DeviceState]]:
        """The wave's devices in rank order (left ones included)."""
        members = [(d, s) for d, s in self.devices.items() if s.wave == index]
        return sorted(members, key=lambda item: (item[1].rank, item[0]))


# ---- events -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TargetDevice:
    """A device of the target as the services see it when planning or when it joins."""

    id: str
    profile_id: str | None
    labels: Mapping[str, str] = field(default_factory=dict)
    current_package: str | None = None


@dataclass(frozen=True)
class DeviceInstalled:
    device_id: str


@dataclass(frozen=True)
class DeviceFailed:
    device_id: str
    reason: str = ""


@dataclass(frozen=True)
class DeviceSelfTestFailed:
    device_id: str
    reason: str = ""


@dataclass(frozen=True)
class DeviceRolledBack:
    """The device acked this rollout's rollback command: it runs what it ran before."""

    device_id: str


@dataclass(frozen=True)
class DeviceRollbackFailed:
    """The device acked this rollout's rollback command as failed (``reason`` says why)."""

    device_id: str
    reason: str = ""


@dataclass(frozen=True)
class DeviceReverted:
    """The device rolled the rollout's package back by itself (its health watch breached)."""

    device_id: str
    reason: str = ""


@dataclass(frozen=True)
class DeviceTimedOut:
    device_id: str


@dataclass(frozen=True)
class DeviceWentSilent:
    device_id: str
    since: float


@dataclass(frozen=True)
class DeviceSeen:
    device_id: str


@dataclass(frozen=True)
class DeviceJoined:
    device: TargetDevice


@dataclass(frozen=True)
class DeviceLeft:
    device_id: str


@dataclass(frozen=True)
class GateReadingsArrived:
    wave: int
    readings: WaveReadings


@dataclass(frozen=True)
class Pause:
    actor: str
    reason: str = ""


@dataclass(frozen=True)
class Resume:
    actor: str


@dataclass(frozen=True)
class Abort:
    actor: str
    reason: str = ""


@dataclass(frozen=True)
class RollbackRequested:
    actor: str
    scope: Literal["wave", "all"] = "all"
    reason: str = ""


@dataclass(frozen=True)
class Approve:
    actor: str


@dataclass(frozen=True)
class Tick:
    busy_elsewhere: int = 0
    """Devices installing for other rollouts right now (counted against the budget)."""


Event = (
    DeviceInstalled
    | DeviceFailed
    | DeviceSelfTestFailed
    | DeviceTimedOut
    | DeviceRolledBack
    | DeviceRollbackFailed
    | DeviceReverted
    | DeviceWentSilent
    | DeviceSeen
    | DeviceJoined
    | DeviceLeft
    | GateReadingsArrived
    | Pause
    | Resume
    | Abort
    | RollbackRequested
    | Approve
    | Tick
)


# ---- actions ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Deploy:
    """Send ``package`` to ``device_id``.

    ``execution_key`` is unique per (rollout, device, attempt): the runner queues
    at most one command per key, so redelivery is idempotent.
    """

    device_id: str
    package: str
    attempt: int
    execution_key: str
    timeout_s: float


@dataclass(frozen=True)
class Rollback:
    """Return ``device_id`` to ``to_package`` (None: it had none; unload the model)."""

    device_id: str
    to_package: str | None
    from_package: str | None
    execution_key: str


@dataclass(frozen=True)
class SetTraffic:
    """Give ``version`` ``percent`` of the alias' requests, ``previous_version`` the rest."""

    model: str
    alias: str
    version: str
    percent: int
    previous_version: str | None


@dataclass(frozen=True)
class PointAlias:
    """The rollout of an alias completed: point it at ``version`` for good."""

    model: str
    alias: str
    version: str


@dataclass(frozen=True)
class WaitForApproval:
    wave: int


@dataclass(frozen=True)
class PromoteWave:
    from_wave: int
    to_wave: int | None
    """None when the last wave passed (the rollout completed)."""


@dataclass(frozen=True)
class Audit:
    action: str
    detail: Mapping[str, Any]


Action = Deploy | Rollback | SetTraffic | PointAlias | WaitForApproval | PromoteWave | Audit

_ACTION_TYPES: dict[str, type[Any]] = {
    t.__name__: t
    for t in (Deploy, Rollback, SetTraffic, PointAlias, WaitForApproval, PromoteWave, Audit)
}


def action_to_dict(action: Action) -> dict[str, Any]:
    return {"type": type(action).__name__, **asdict(action)}


def action_from_dict(data: Mapping[str, Any]) -> Action:
    fields = dict(data)
    kind = _ACTION_TYPES[fields.pop("type")]
    action: Action = kind(**fields)
    return action
