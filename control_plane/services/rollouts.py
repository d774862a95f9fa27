"""Rollouts: the engine (``core/rollout*.py``) wired to the store, the commands and the audit.

:class:`RolloutService` builds a :class:`~control_plane.core.rollout_runner.PortRunner`
over these ports:

- ``RolloutStore``: ``repos.rollouts`` (state JSON, revision compare-and-set, outbox);
- ``DeviceCommands``: :class:`CommandService` with the action's ``execution_key``
  (one command per key, ever: a re-applied outbox queues nothing new);
- ``GateReadings``: :class:`WindowReadings`, the devices' indexed telemetry windows (the new
  version's since the wave started, the previous versions' from a lookback before it):
  requests and errors summed per version, KLL latency sketches merged for p95 (None
  while no window carries a sketch: the latency gate stays pending), and monitoring's
  firing drift alerts on the version (:class:`AlertDrift` over
  ``AlertService.blocks_rollout``; the no-op default when monitoring is off);
- ``AuditLog``: the audit repository, as actor ``rollouts``;
- ``AliasTraffic``: :class:`~control_plane.services.function_aliases.AliasTrafficPort`
  (a function alias' split in the store); for an alias target the readings are the
  function's telemetry windows (its ``telemetry_device``) at the new version against
  the alias' previous version.

:meth:`RolloutService.tick_all` is what the control plane's ticker calls every
few seconds: per active rollout it feeds command acks (deploy ok → ``DeviceInstalled``;
failed → ``DeviceFailed``, or ``DeviceSelfTestFailed`` when the agent's failing
step is ``selftest``; rollback → ``DeviceRolledBack`` / ``DeviceRollbackFailed``),
target membership (``DeviceJoined`` / ``DeviceLeft``, with what each device runs from
its own reports, ``Device.slots``), the devices' own health-watch rollbacks
(``DeviceReverted``) and silence (``DeviceWentSilent`` / ``DeviceSeen`` from
``last_seen``), then ticks; aborted and rolled-back rollouts get their rollback acks.
A save that lost a compare-and-set (another replica, or an operator meanwhile)
is retried from a fresh load.
"""

from __future__ import annotations

import builtins
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypeVar

from control_plane.core.function_alias import primary_version
from control_plane.core.lifecycle import DEPLOYABLE, is_deployable
from control_plane.core.rollout import next_deadline, summary
from control_plane.core.rollout_gates import (
    DriftAlerts,
    DriftSource,
    NoDrift,
    NoDriftAlerts,
    VersionStats,
    WaveReadings,
)
from control_plane.core.rollout_model import (
    Abort,
    Approve,
    Deploy,
    DeviceFailed,
    DeviceInstalled,
    DeviceJoined,
    DeviceLeft,
    DeviceReverted,
    DeviceRollbackFailed,
    DeviceRolledBack,
    DeviceSeen,
    DeviceSelfTestFailed,
    DeviceWentSilent,
    Event,
    Pause,
    Resume,
    Rollback,
    RollbackRequested,
    Rollout,
    TargetDevice,
)
from control_plane.core.rollout_runner import PortRunner
from control_plane.core.rollout_spec import (
    AliasTarget,
    DeviceTarget,
    RolloutBlocked,
    RolloutSpec,
    parse_spec,
)
from control_plane.core.running import running_package, self_rollback
from control_plane.core.sketches import WindowAccumulator
from control_plane.errors import Conflict, ControlPlaneError, InvalidInput
from control_plane.services import Clock
from control_plane.services.alerts import AlertService
from control_plane.services.audit import AuditService
from control_plane.services.commands import CommandService
from control_plane.services.function_aliases import AliasTrafficPort, active_rollout
from control_plane.services.tokens import Principal
from control_plane.store.records import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    Command,
    Device,
    Page,
)
from control_plane.store.repos import Repositories, RevisionConflict

logger = logging.getLogger(__name__)

ACTOR = "rollouts"
"""The audit actor of what the engine decides (operators' commands carry their own name)."""
TICKED_PHASES = ("running", "paused")
"""Completed rollouts are ticked too when their spec has the dynamic tail (it still deploys)."""
ROLLED_BACK_PHASES = ("aborted", "rolled_back")
"""Their rollback acks are still fed (per-device rollback outcome), nothing else."""
BASELINE_LOOKBACK_S = 300.0
"""The previous version's windows count from this long before the wave started (at least the
bake time): the same devices' traffic just before the switch, not only the little after it."""
RETRIES = 5
Verb = Literal["pause", "resume", "abort", "rollback", "approve"]
VERBS: tuple[Verb, ...] = ("pause", "resume", "abort", "rollback", "approve")

T = TypeVar("T")


def subject(rollout_id: str) -> str:
    return f"rollout:{rollout_id}"


class _Clock:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def now(self) -> float:
        return self.clock()


class _Audit:
    def __init__(self, audit: AuditService) -> None:
        self.audit = audit

    def record(self, action: str, subject_id: str, at: float, detail: Mapping[str, Any]) -> None:
        self.audit.repo.add(ACTOR, action, subject(subject_id), at, detail=detail)


class CommandPort:
    """``DeviceCommands`` over :class:`CommandService`: one command per execution key."""

    def __init__(self, repos: Repositories, commands: CommandService) -> None:
        self.repos = repos
        self.commands = commands

    def deploy(self, rollout_id: str, action: Deploy) -> None:
        body = {"sha256": action.package, "rollout": rollout_id, "attempt": action.attempt}
        self._send(rollout_id, action.device_id, "deploy", body, action.execution_key)

    def rollback(self, rollout_id: str, action: Rollback) -> None:
        body = {
            "model_name": self.repos.rollouts.get(rollout_id).model,
            "reason": f"rollout {rollout_id} rolled back",
            "rollout": rollout_id,
            "to_package": action.to_package,
            "from_package": action.from_package,
        }
        self._send(rollout_id, action.device_id, "rollback", body, action.execution_key)

    def installing_elsewhere(self, rollout_id: str) -> int:
        return self.repos.rollouts.installing_elsewhere(rollout_id)

    def _send(
        self, rollout_id: str, device_id: str, kind: str, body: dict[str, Any], key: str
    ) -> None:
        try:
            self.commands.send(
                device_id, kind, body, subject(rollout_id), execution_key=key, rollout_id=rollout_id
            )
        except ControlPlaneError as exc:  # device gone meanwhile: it times out in the engine
            logger.warning("rollout %s: %s to %s not queued: %s", rollout_id, kind, device_id, exc)
            self.repos.audit.add(
                ACTOR,
                f"rollout.{kind}_not_queued",
                subject(rollout_id),
                time.time(),
                detail={"device": device_id, "execution_key": key, "error": str(exc)},
            )


class WindowReadings:
    """``GateReadings`` from the indexed telemetry windows of the devices around the wave.

    New version: windows of the rollout's model at its version received since the wave
    started; baseline: the same model at any other version on the same devices, received
    since ``max(bake_s, BASELINE_LOOKBACK_S)`` before the wave started. Error rate is
    (errors + invalid) / requests; p95 comes from the windows' merged KLL sketches.
    The windows' index (``telemetry_windows``, and ``telemetry_rollups`` for a wave
    baking past the full-resolution age, a rollup dated by its newest window) holds all
    of it, so the raw uploads can be pruned. Drift: monitoring's firing alerts on the
    version (``drift_alerts``; the no-op default when monitoring is off leaves the drift
    gate to a score, so it stays pending).
    """

    def __init__(
        self,
        repos: Repositories,
        drift: DriftSource | None = None,
        drift_alerts: DriftAlerts | None = None,
    ) -> None:
        self.repos = repos
        self.drift = drift or NoDrift()  # services/alerts.WaveDrift: drift and firing alerts
        self.drift_alerts = drift_alerts or NoDriftAlerts()

    def read(
        self, rollout: Rollout, wave: int, subjects: Sequence[str], since: float, now: float
    ) -> WaveReadings | None:
        model, version = rollout.spec.model, rollout.spec.version
        lookback = max(rollout.spec.bake_s, BASELINE_LOOKBACK_S)
        baseline: str | None = None  # devices: any other version on the same devices
        alias_name: str | None = None
        if isinstance(rollout.spec.target, AliasTarget):
            # the function's containers report under its telemetry device; the baseline is
            # the version the alias served before, sharing the traffic with the new one.
            # Windows stamped with another alias of the same function are not this one's.
            alias = self.repos.function_aliases.get(rollout.spec.target.alias)
            subjects, baseline = [alias.telemetry_device], rollout.previous_version
            alias_name = alias.name
        new, old = WindowAccumulator(), WindowAccumulator()
        for device_id in subjects:
            for w in self.repos.monitoring.received(
                model_name=model, device_id=device_id, since=since - lookback
            ):
                if alias_name is not None and w.alias not in (None, alias_name):
                    continue
                if w.model_version == version:
                    if w.received_at >= since:
                        new.add(w.folded(histograms=False))
                elif baseline is None or w.model_version == baseline:
                    old.add(w.folded(histograms=False))
        alerts = self.drift_alerts.firing(model, version)
        if new.windows == 0 and old.windows == 0 and alerts is None:
            return None
        measured = self.drift.drift(model, version, subjects, since)
        return WaveReadings(
            at=now,
            new=_stats(new),
            baseline=_stats(old) if old.windows else None,
            drift_score=None if measured is None else measured[0],
            drift_samples=0 if measured is None else measured[1],
            drift_alerts=None if alerts is None else tuple(alerts),
        )


class AlertDrift:
    """``DriftAlerts`` over monitoring's :meth:`AlertService.blocks_rollout`."""

    def __init__(self, alerts: AlertService) -> None:
        self.alerts = alerts

    def firing(self, model: str, version: str) -> builtins.list[str] | None:
        return [a.id for a in self.alerts.blocks_rollout(model, version)]


def _stats(acc: WindowAccumulator) -> VersionStats:
    p95 = None if acc.latency.is_empty() else float(acc.latency.get_quantile(0.95))
    return VersionStats(requests=acc.requests, failures=acc.errors + acc.invalid, p95_ms=p95)


def ack_event(command: Command) -> Event:
    """What a deploy or rollback command's ack means to the engine."""
    if command.kind == "rollback":
        if command.status == "ok":
            return DeviceRolledBack(command.device_id)
        error = (command.result or {}).get("error")
        return DeviceRollbackFailed(
            command.device_id, str(error or "the device reported a failure")
        )
    if command.status == "ok":
        return DeviceInstalled(command.device_id)
    result = command.result or {}
    reason = str(result.get("error") or "the device reported a failure")
    if result.get("step") == "selftest":
        return DeviceSelfTestFailed(command.device_id, reason)
    return DeviceFailed(command.device_id, reason)


class RolloutService:
    def __init__(
        self,
        repos: Repositories,
        audit: AuditService,
        commands: CommandService | None = None,
        clock: Clock = time.time,
        drift: DriftSource | None = None,
        drift_alerts: DriftAlerts | None = None,
    ) -> None:
        self.repos = repos
        self.audit = audit
        self.clock = clock
        self.commands = commands or CommandService(repos, clock)
        self.runner = PortRunner(
            clock=_Clock(clock),
            store=repos.rollouts,
            commands=CommandPort(repos, self.commands),
            readings=WindowReadings(repos, drift, drift_alerts),
            traffic=AliasTrafficPort(repos, audit, clock),
            audit=_Audit(audit),
        )

    # -- creating

    def create(self, spec_data: Mapping[str, Any], actor: Principal) -> Rollout:
        """Validate the spec, resolve the target and its packages, start wave 0.

        400 for a bad spec (naming the field); 404 for an unknown model or version;
        409 when a profile of the target has no package of the version (naming it).
        """
        spec = parse_spec(spec_data)
        version = self.repos.versions.get(spec.model, spec.version)
        if not is_deployable(version.stage):
            raise Conflict(
                f"{spec.model} {version.version} is {version.stage}: only "
                f"{', '.join(sorted(DEPLOYABLE))} versions roll out"
            )
        if isinstance(spec.target, AliasTarget):
            return self._create_for_alias(spec, spec.target, actor)
        devices = self._target(spec)
        packages: dict[str, str] = {}
        for profile in sorted({d.profile_id for d in devices if d.profile_id is not None}):
            found = self.repos.packages.find(spec.model, version.version, profile)
            if found is not None:
                packages[profile] = found.sha256
        rollout_id = uuid.uuid4().hex[:16]
        targets = [_target_device(d, spec.model) for d in devices]
        rollout = self.runner.create(rollout_id, spec, targets, packages)
        self.audit.record(
            actor.name,
            "rollout.create",
            subject(rollout_id),
            after={"phase": rollout.phase, "devices": len(rollout.devices)},
            detail={"spec": spec.model_dump(mode="json")},
        )
        return rollout

    def _create_for_alias(
        self, spec: RolloutSpec, target: AliasTarget, actor: Principal
    ) -> Rollout:
        """An alias target: its waves are traffic steps from the alias' current version.

        404 unknown alias; 400 an alias of another model; 409 an alias already split
        (another rollout or an operator's canary), already at the version, moved by
        another rollout, or a version without any package for a container to load.
        """
        alias = self.repos.function_aliases.get(target.alias)
        if alias.model != spec.model:
            raise InvalidInput(
                f"target.alias: function alias {alias.name!r} serves model {alias.model!r}, "
                f"not {spec.model!r}"
            )
        moving = active_rollout(self.repos, alias.name)
        if moving is not None:
            raise Conflict(f"rollout {moving} is already moving function alias {alias.name!r}")
        if len(alias.routes) != 1:
            raise RolloutBlocked(
                f"function alias {alias.name!r} is split {alias.routes}: "
                "set it to one version before a rollout moves it"
            )
        previous = primary_version(alias.routes)
        if previous == spec.version:
            raise Conflict(f"function alias {alias.name!r} already serves {spec.version}")
        if not self.repos.packages.list(
            model_name=spec.model, model_version=spec.version, limit=1
        ).items:
            raise RolloutBlocked(
                f"{spec.model} {spec.version} has no package: a function container would "
                "have nothing to load (compile it first)"
            )
        rollout_id = uuid.uuid4().hex[:16]
        rollout = self.runner.create(rollout_id, spec, [], {}, previous_version=previous)
        self.audit.record(
            actor.name,
            "rollout.create",
            subject(rollout_id),
            after={"phase": rollout.phase, "alias": alias.name, "previous_version": previous},
            detail={"spec": spec.model_dump(mode="json")},
        )
        return rollout

    def _target(self, spec: RolloutSpec) -> builtins.list[Device]:
        assert isinstance(spec.target, DeviceTarget)
        devices: list[Device] = []
        offset: int | None = 0
        while offset is not None:
            page = self.repos.devices.list(
                status="active", labels=spec.target.selector or None, limit=MAX_LIMIT, offset=offset
            )
            devices += page.items
            offset = page.next_offset
        return devices

    # -- reading

    def get(self, rollout_id: str) -> Rollout:
        return Rollout.from_dict(self.repos.rollouts.get(rollout_id).state)

    def summary(self, rollout_id: str) -> dict[str, Any]:
        return summary(self.get(rollout_id))

    def list(
        self,
        *,
        phase: str | None = None,
        model: str | None = None,
        limit: int = DEFAULT_LIMIT,
        offset: int = 0,
    ) -> tuple[builtins.list[dict[str, Any]], Page[Any]]:
        page = self.repos.rollouts.list(phase=phase, model=model, limit=limit, offset=offset)
        return [summary(Rollout.from_dict(r.state)) for r in page.items], page

    # -- operator commands

    def act(
        self,
        rollout_id: str,
        verb: Verb,
        actor: Principal,
        *,
        reason: str = "",
        scope: Literal["wave", "all"] = "all",
    ) -> Rollout:
        """pause / resume / abort / rollback / approve; 409 naming the phase when out of place."""
        event: Event
        if verb == "pause":
            event = Pause(actor.name, reason)
        elif verb == "resume":
            event = Resume(actor.name)
        elif verb == "abort":
            event = Abort(actor.name, reason)
        elif verb == "rollback":
            event = RollbackRequested(actor.name, scope, reason)
        elif verb == "approve":
            event = Approve(actor.name)
        else:
            raise InvalidInput(f"rollout command {verb!r}: expected one of {list(VERBS)}")
        before = self.get(rollout_id)
        after = self._retry(lambda: self.runner.handle(rollout_id, event))
        self.audit.record(
            actor.name,
            f"rollout.{verb}",
            subject(rollout_id),
            before={"phase": before.phase, "current_wave": before.current},
            after={"phase": after.phase, "current_wave": after.current},
            detail={"reason": reason, **({"scope": scope} if verb == "rollback" else {})},
        )
        return after

    # -- the ticker

    def recover_all(self) -> int:
        """Apply what a crash left in the outboxes (at start); returns how many actions."""
        done = 0
        phases = TICKED_PHASES + ("completed", "aborted", "rolled_back")
        for rollout_id in self.repos.rollouts.ids_in_phases(phases):
            done += self.runner.recover(rollout_id)
        return done

    def tick_all(self) -> float | None:
        """One pass over the active rollouts; one rollout's failure does not stop the others.

        Returns the earliest time at which time alone moves one of them (a bake's end, a
        device's timeout: :func:`~control_plane.core.rollout.next_deadline`), or None.
        """
        rollouts = self.repos.rollouts
        ticked = rollouts.ids_in_phases(TICKED_PHASES)
        ticked += rollouts.ids_in_phases(["completed"], dynamic_tail=True)
        deadlines: list[float] = []
        for rollout_id in ticked:
            try:
                deadline = next_deadline(self.tick(rollout_id), self.clock())
            except Exception:  # the ticker must outlive any one rollout's failure
                logger.exception("rollout %s: tick failed", rollout_id)
                continue
            if deadline is not None:
                deadlines.append(deadline)
        for rollout_id in rollouts.ids_in_phases(ROLLED_BACK_PHASES):
            try:
                self.feed_acks(rollout_id)
            except Exception:
                logger.exception("rollout %s: feeding rollback acks failed", rollout_id)
        return min(deadlines, default=None)

    def feed_acks(self, rollout_id: str) -> Rollout | None:
        """Feed an aborted or rolled-back rollout its rollback acks (nothing else moves)."""
        acks = self.repos.rollouts.unfed_acks(rollout_id)
        if not acks:
            return None
        rollout = self.get(rollout_id)
        events = self._ack_events(rollout, acks)
        after = self._retry(lambda: self.runner.handle_many(rollout_id, events)) if events else None
        self.repos.rollouts.mark_fed([c.id for c in acks], self.clock())
        return after

    def tick(self, rollout_id: str) -> Rollout:
        """Feed acks, membership, silence and the devices' own rollbacks, then let time pass."""
        rollout = self.get(rollout_id)
        acks = self.repos.rollouts.unfed_acks(rollout_id)
        events = self._ack_events(rollout, acks)
        events += self._membership(rollout)
        # one load and one save for the acks, the membership, the readings and the time
        ticked = self._retry(lambda: self.runner.tick(rollout_id, events))
        if acks:
            self.repos.rollouts.mark_fed([c.id for c in acks], self.clock())
        return ticked

    def _ack_events(self, rollout: Rollout, acks: Sequence[Command]) -> builtins.list[Event]:
        events: list[Event] = []
        for command in acks:
            # a late success counts (the engine takes it); a stale attempt's failure does not
            if command.kind == "rollback" or (
                command.kind == "deploy" and (command.status == "ok" or _current(rollout, command))
            ):
                events.append(ack_event(command))
        return events

    def _membership(self, rollout: Rollout) -> builtins.list[Event]:
        spec = rollout.spec
        if not isinstance(spec.target, DeviceTarget):
            return []
        now = self.clock()
        silent_after = spec.gates.availability.silent_after_s
        current = {d.id: d for d in self._target(spec)}
        events: list[Event] = []
        for device_id, state in rollout.devices.items():
            device = current.get(device_id)
            if device is None:
                if not state.left:
                    events.append(DeviceLeft(device_id))
                continue
            if state.left:
                events.append(DeviceJoined(_target_device(device, spec.model)))
            if not state.touched:
                continue
            reverted = state.package and self_rollback(
                device.slots, spec.model, state.package, state.deployed_at
            )
            if reverted and not state.reverted and not state.rolled_back:
                events.append(DeviceReverted(device_id, reverted))
            seen = device.last_seen or device.enrolled_at
            if now - seen >= silent_after and state.silent_since is None:
                events.append(DeviceWentSilent(device_id, seen))
            elif now - seen < silent_after and state.silent_since is not None:
                events.append(DeviceSeen(device_id))
        for device_id, device in current.items():
            if spec.dynamic_tail and device_id not in rollout.devices:
                events.append(DeviceJoined(_target_device(device, spec.model)))
        return events

    def _retry(self, attempt: Callable[[], T]) -> T:
        for _ in range(RETRIES - 1):
            try:
                return attempt()
            except RevisionConflict:
                continue
        return attempt()


def _target_device(device: Device, model: str) -> TargetDevice:
    """The device as the engine sees it: what it runs of ``model`` from its own reports."""
    running = running_package(device.slots, model)
    return TargetDevice(device.id, device.profile_id, device.labels, running)


def _current(rollout: Rollout, command: Command) -> bool:
    """An ack of the device's latest deploy of this rollout (an older attempt's is stale)."""
    state = rollout.devices.get(command.device_id)
    if state is None:
        return False
    attempt = command.body.get("attempt")
    return not isinstance(attempt, int) or attempt == state.attempts
