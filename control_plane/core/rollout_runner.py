"""The runner: feeds the engine events and carries out its actions through ports.

The engine (:func:`control_plane.core.rollout.step`) decides; the runner only
loads the state, steps it, stores the new state *together with* the actions
(an outbox, in one transaction), applies the actions through the ports, and
clears the outbox. A control plane killed between the save and the apply
finds the actions in the outbox when it starts again and applies them again
(:meth:`PortRunner.recover`); the ports make that idempotent: a deploy is
queued at most once per ``execution_key`` (the device's execution version
then makes a redelivered command a no-op on the agent).

The ports are Protocols; the services implement them over the store's
repositories (``CommandRepo``, ``AliasRepo``, ``AuditRepo``, the upload
tables) and the tests over dicts (``tests/unit/control_plane/rollout_sim.py``).
Nothing here does I/O itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from control_plane.core.rollout import start_rollout, step_many
from control_plane.core.rollout_gates import WaveReadings
from control_plane.core.rollout_model import (
    Action,
    Audit,
    Deploy,
    Event,
    GateReadingsArrived,
    PointAlias,
    PromoteWave,
    Rollback,
    Rollout,
    SetTraffic,
    TargetDevice,
    Tick,
    WaitForApproval,
    action_from_dict,
    action_to_dict,
)
from control_plane.core.rollout_spec import RolloutSpec


class Clock(Protocol):
    def now(self) -> float: ...


class DeviceCommands(Protocol):
    def deploy(self, rollout_id: str, action: Deploy) -> None:
        """Queue a deploy command; the same ``execution_key`` again queues nothing."""
        ...

    def rollback(self, rollout_id: str, action: Rollback) -> None:
        """Queue a rollback command; the same ``execution_key`` again queues nothing."""
        ...

    def installing_elsewhere(self, rollout_id: str) -> int:
        """Devices installing for other rollouts now (the fleet-wide disruption budget)."""
        ...


class AliasTraffic(Protocol):
    def set_traffic(self, action: SetTraffic) -> None: ...
    def point(self, action: PointAlias) -> None: ...


class GateReadings(Protocol):
    def read(
        self, rollout: Rollout, wave: int, subjects: Sequence[str], since: float, now: float
    ) -> WaveReadings | None:
        """Telemetry of the new and the previous version over ``subjects`` (device ids, or
        the alias name) since ``since``: request and failure counts, merged p95, drift."""
        ...


class AuditLog(Protocol):
    def record(self, action: str, subject: str, at: float, detail: Mapping[str, Any]) -> None: ...


@dataclass(frozen=True)
class StoredRollout:
    state: dict[str, Any]
    revision: int
    outbox: list[dict[str, Any]] = field(default_factory=list)


class RolloutStore(Protocol):
    def create(self, rollout_id: str, state: Mapping[str, Any], outbox: Sequence[Any]) -> int:
        """Store a new rollout (Conflict if the id exists); returns its revision."""
        ...

    def load(self, rollout_id: str) -> StoredRollout: ...

    def save(
        self,
        rollout_id: str,
        state: Mapping[str, Any],
        outbox: Sequence[Mapping[str, Any]],
        expected_revision: int,
    ) -> int:
        """Replace state and append to the outbox if the revision is still ``expected_revision``
        (compare-and-set: Conflict otherwise); returns the new revision."""
        ...

    def clear_outbox(self, rollout_id: str, upto_revision: int) -> None: ...


class RolloutRunner(Protocol):
    """What the rollouts service calls; one implementation is :class:`PortRunner`."""

    def create(
        self,
        rollout_id: str,
        spec: RolloutSpec,
        devices: Sequence[TargetDevice],
        packages: Mapping[str, str],
        previous_version: str | None = None,
    ) -> Rollout: ...

    def handle(self, rollout_id: str, event: Event) -> Rollout: ...
    def handle_many(self, rollout_id: str, events: Sequence[Event]) -> Rollout: ...
    def tick(self, rollout_id: str, events: Sequence[Event] = ()) -> Rollout: ...
    def recover(self, rollout_id: str) -> int: ...


@dataclass
class PortRunner:
    clock: Clock
    store: RolloutStore
    commands: DeviceCommands
    readings: GateReadings
    traffic: AliasTraffic
    audit: AuditLog

    def create(
        self,
        rollout_id: str,
        spec: RolloutSpec,
        devices: Sequence[TargetDevice],
        packages: Mapping[str, str],
        previous_version: str | None = None,
    ) -> Rollout:
        now = self.clock.now()
        busy = self.commands.installing_elsewhere(rollout_id)
        rollout, actions = start_rollout(
            rollout_id,
            spec,
            devices,
            packages,
            now,
            previous_version=previous_version,
            busy_elsewhere=busy,
        )
        revision = self.store.create(rollout_id, rollout.to_dict(), _outbox(actions))
        self._apply(rollout_id, actions, now)
        self.store.clear_outbox(rollout_id, revision)
        return rollout

    def handle(self, rollout_id: str, event: Event) -> Rollout:
        return self.handle_many(rollout_id, [event])

    def handle_many(self, rollout_id: str, events: Sequence[Event]) -> Rollout:
        """Step through ``events`` with one load and one save (a batch of acks per tick).

        A command out of place (RolloutConflict) aborts the batch before anything is saved.
        """
        stored = self.store.load(rollout_id)
        return self._step(rollout_id, stored, Rollout.from_dict(stored.state), events)

    def _step(
        self, rollout_id: str, stored: StoredRollout, rollout: Rollout, events: Sequence[Event]
    ) -> Rollout:
        now = self.clock.now()
        rollout, actions = step_many(rollout, events, now)
        revision = self.store.save(rollout_id, rollout.to_dict(), _outbox(actions), stored.revision)
        self._apply(rollout_id, actions, now)
        self.store.clear_outbox(rollout_id, revision)
        return rollout

    def tick(self, rollout_id: str, events: Sequence[Event] = ()) -> Rollout:
        """Step ``events`` (a tick's acks and membership changes), read the current wave's
        gate readings, then let time pass in the engine: one load and one save in all."""
        stored = self.store.load(rollout_id)
        rollout = Rollout.from_dict(stored.state)
        events = list(events)
        wave = rollout.waves[rollout.current]
        if wave.status in ("deploying", "baking") and wave.started_at is not None:
            if rollout.spec.target.kind == "alias":
                subjects = [rollout.spec.target.alias]
            else:
                subjects = [d for d, s in rollout.wave_devices(wave.index) if s.touched]
            now = self.clock.now()
            found = self.readings.read(rollout, wave.index, subjects, wave.started_at, now)
            if found is not None:
                events.append(GateReadingsArrived(wave.index, found))
        events.append(Tick(self.commands.installing_elsewhere(rollout_id)))
        return self._step(rollout_id, stored, rollout, events)

    def recover(self, rollout_id: str) -> int:
        """Apply what a crash left in the outbox (idempotent); returns how many actions."""
        stored = self.store.load(rollout_id)
        actions = [action_from_dict(a) for a in stored.outbox]
        self._apply(rollout_id, actions, self.clock.now())
        self.store.clear_outbox(rollout_id, stored.revision)
        return len(actions)

    def _apply(self, rollout_id: str, actions: Sequence[Action], now: float) -> None:
        for action in actions:
            match action:
                case Deploy():
                    self.commands.deploy(rollout_id, action)
                case Rollback():
                    self.commands.rollback(rollout_id, action)
                case SetTraffic():
                    self.traffic.set_traffic(action)
                case PointAlias():
                    self.traffic.point(action)
                case Audit():
                    self.audit.record(action.action, rollout_id, now, action.detail)
                case WaitForApproval():
                    detail = {"wave": action.wave}
                    self.audit.record("rollout.approval_requested", rollout_id, now, detail)
                case PromoteWave():
                    moved = {"from": action.from_wave, "to": action.to_wave}
                    self.audit.record("rollout.promoted", rollout_id, now, moved)


def _outbox(actions: Sequence[Action]) -> list[dict[str, Any]]:
    return [action_to_dict(a) for a in actions]
