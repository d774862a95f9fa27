"""The rollout state machine: ``step(state, event, now) -> (state, actions)`` (pure, no I/O).

No clock is read: time comes in as ``now``. ``step`` never mutates its input.
After every event the engine *advances*: expires per-device timeouts (a retry
while ``retries`` last, then ``timed_out``), moves the current wave along
(pending → awaiting_approval → deploying → baking → passed | failed) and
dispatches queued devices of the current wave while the disruption budget and
their maintenance windows allow.

A wave fails when a gate fails (``rollout_gates``) or, after the bake, a gate
stays pending past ``gates.pending_deadline_s``; ``on_failure`` then pauses,
or aborts and rolls back the wave, or aborts and rolls back every wave. A wave
passes only when every gate passes after the bake; then the next wave starts
(after approval when ``approve_between``), or the rollout completes.

Operator commands that do not apply in the current phase raise
:class:`RolloutConflict` (a ``Conflict``: HTTP 409) and change nothing.
Device events for unknown devices or stale states are ignored (redelivery).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from control_plane.core.rollout_gates import (
    GateInput,
    GateResult,
    InstallCounts,
    WaveReadings,
    gates_for,
    overall,
)
from control_plane.core.rollout_handlers import (
    RolloutConflict,
    handle,
    new_device,
    roll_back,
    start_wave,
    time_out,
)
from control_plane.core.rollout_model import (
    FINAL_PHASES,
    TERMINAL,
    Action,
    Audit,
    Deploy,
    Event,
    PointAlias,
    PromoteWave,
    Rollout,
    TargetDevice,
    Tick,
    WaitForApproval,
    WaveState,
)
from control_plane.core.rollout_spec import DeviceTarget, RolloutSpec
from control_plane.core.waves import assign_waves, packages_for

Actions = list[Action]


def plan_rollout(
    rollout_id: str,
    spec: RolloutSpec,
    devices: Sequence[TargetDevice],
    packages: Mapping[str, str],
    now: float,
    *,
    previous_version: str | None = None,
) -> Rollout:
    """The initial state. Devices outside the selector are left out; a device already
    running its package counts as succeeded without a deploy. Raises RolloutBlocked
    naming each profile of the target without a package."""
    waves = [WaveState(index=i, name=w.name, traffic=w.traffic) for i, w in enumerate(spec.waves)]
    rollout = Rollout(
        id=rollout_id,
        spec=spec,
        created_at=now,
        updated_at=now,
        waves=waves,
        packages=dict(packages),
        previous_version=previous_version,
    )
    if not isinstance(spec.target, DeviceTarget):
        return rollout
    target = {d.id: d for d in devices if spec.target.matches(d.labels)}
    chosen = packages_for({d.id: d.profile_id for d in target.values()}, packages)
    for device_id, wave in assign_waves(rollout_id, spec.waves, list(target)).items():
        rollout.devices[device_id] = new_device(spec, target[device_id], wave, rollout_id)
        rollout.devices[device_id].package = chosen[device_id]
        if target[device_id].current_package == chosen[device_id]:
            rollout.devices[device_id].status = "succeeded"
            rollout.devices[device_id].reason = "already runs this package"
            rollout.devices[device_id].finished_at = now
    return rollout


def start_rollout(
    rollout_id: str,
    spec: RolloutSpec,
    devices: Sequence[TargetDevice],
    packages: Mapping[str, str],
    now: float,
    *,
    previous_version: str | None = None,
    busy_elsewhere: int = 0,
) -> tuple[Rollout, Actions]:
    """Plan, audit the creation with its numbers, and take the first step."""
    rollout = plan_rollout(
        rollout_id, spec, devices, packages, now, previous_version=previous_version
    )
    sizes = [sum(1 for s in rollout.devices.values() if s.wave == w.index) for w in rollout.waves]
    created = Audit(
        "rollout.created",
        {
            "rollout": rollout_id,
            "model": spec.model,
            "version": spec.version,
            "target": spec.target.kind,
            "devices": len(rollout.devices),
            "wave_sizes": sizes,
        },
    )
    rollout, actions = step(rollout, Tick(busy_elsewhere), now)
    return rollout, [created, *actions]


def step(state: Rollout, event: Event, now: float) -> tuple[Rollout, Actions]:
    """Apply ``event`` at ``now``; returns the new state and the actions to carry out."""
    r = _copy(state)
    r.updated_at = now
    out: Actions = []
    handle(r, event, now, out)
    _advance(r, now, out)
    return r, out


def step_many(state: Rollout, events: Sequence[Event], now: float) -> tuple[Rollout, Actions]:
    """:func:`step` over ``events`` in order, with one copy of the state.

    The same state and actions as stepping them one by one (each event is handled and
    the rollout advanced after it), but a thousand-device state is copied once per
    batch, not once per event. A RolloutConflict leaves ``state`` unchanged, as ``step``.
    """
    r = _copy(state)
    out: Actions = []
    for event in events:
        r.updated_at = now
        handle(r, event, now, out)
        _advance(r, now, out)
    return r, out


def next_deadline(r: Rollout, now: float) -> float | None:
    """The earliest time after ``now`` at which time alone moves the rollout (a device's
    timeout, the current wave's bake end or its gates' pending deadline); None if only
    events will. The ticker sleeps until then at most."""
    if r.phase in FINAL_PHASES:
        return None
    found = [
        (d.deployed_at or 0.0) + r.spec.device_timeout_s
        for d in r.devices.values()
        if d.status == "installing"
    ]
    wave = r.waves[r.current]
    if r.phase == "running" and wave.status == "baking" and wave.bake_until is not None:
        found += [wave.bake_until, wave.bake_until + r.spec.gates.pending_deadline_s]
    later = [t for t in found if t > now]
    return min(later) if later else None


def summary(r: Rollout) -> dict[str, Any]:
    """What ``status`` and ``watch`` show: the phase and, per wave, devices by status and the
    latest gate verdicts (the full state, per device, is ``r.to_dict()``)."""
    waves = []
    for wave in r.waves:
        members = [d for _, d in r.wave_devices(wave.index)]
        counts = {status: 0 for status in _STATUSES}
        for d in members:
            counts["left" if d.left else d.status] += 1
        counts["rolled_back"] = sum(d.rolled_back for d in members)
        counts["rollback_done"] = sum(d.rollback == "done" for d in members)
        counts["rollback_failed"] = sum(d.rollback == "failed" for d in members)
        counts["reverted"] = sum(d.reverted for d in members)
        waves.append(
            {
                "index": wave.index,
                "name": wave.name,
                "status": wave.status,
                "traffic": wave.traffic,
                "devices": counts,
                "bake_until": wave.bake_until,
                "gates": {g["gate"]: g["verdict"] for g in wave.gates},
                "reason": wave.reason,
            }
        )
    spec = r.spec
    return {
        "id": r.id,
        "model": spec.model,
        "version": spec.version,
        "target": spec.target.kind,
        "phase": r.phase,
        "reason": r.reason,
        "current_wave": r.current,
        "traffic": r.traffic if spec.target.kind == "alias" else None,
        "waves": waves,
        "updated_at": r.updated_at,
    }


_STATUSES = ("queued", "installing", "succeeded", "failed", "timed_out", "skipped", "left")


def _copy(state: Rollout) -> Rollout:
    """A copy ``step`` may change. Device states hold only scalars and wave states are changed
    by assigning whole fields, so copying each model shallowly is a full copy, and several
    times cheaper than ``model_copy(deep=True)`` over a thousand devices."""
    r = state.model_copy()
    r.devices = {device_id: d.model_copy() for device_id, d in state.devices.items()}
    r.waves = [w.model_copy() for w in state.waves]
    return r


# ---- advancing --------------------------------------------------------------------------------


def _advance(r: Rollout, now: float, out: Actions) -> None:
    if r.phase in FINAL_PHASES:
        return
    for device_id, d in sorted(r.devices.items(), key=lambda i: (i[1].rank, i[0])):
        deadline = (d.deployed_at or 0.0) + r.spec.device_timeout_s
        if d.status == "installing" and now >= deadline:
            time_out(r, device_id, d, now, out)
    if r.phase == "running":
        _progress(r, now, out)
    if r.phase in ("running", "completed"):
        _dispatch(r, now, out)


def _progress(r: Rollout, now: float, out: Actions) -> None:
    spec = r.spec
    while r.phase == "running":
        wave = r.waves[r.current]
        if wave.status == "pending":
            needs = spec.approve_first if r.current == 0 else spec.approve_between
            if needs:
                wave.status = "awaiting_approval"
                out.append(WaitForApproval(r.current))
                out.append(Audit("rollout.awaiting_approval", {"rollout": r.id, "wave": r.current}))
                return
            start_wave(r, wave, now, out)
        if wave.status not in ("deploying", "baking"):
            return
        verdict, results = _judge(r, wave, now, out)
        wave.gates = [g.to_dict() for g in results]
        if verdict == "fail":
            _fail_wave(r, wave, results, now, out)
            return
        if verdict != "pass":
            return
        wave.status, wave.finished_at = "passed", now
        last = r.current == len(r.waves) - 1
        out.append(PromoteWave(r.current, None if last else r.current + 1))
        out.append(
            Audit("rollout.wave_passed", {"rollout": r.id, "wave": r.current, "gates": wave.gates})
        )
        if last:
            r.phase = "completed"
            if spec.target.kind == "alias":
                out.append(PointAlias(spec.model, spec.target.alias, spec.version))
            out.append(Audit("rollout.completed", {"rollout": r.id}))
            return
        r.current += 1


def install_counts(r: Rollout, index: int) -> InstallCounts:
    """The wave's devices by outcome, left ones and skipped joiners not counted."""
    members = [d for _, d in r.wave_devices(index) if not d.left and d.status != "skipped"]
    return InstallCounts(
        total=len(members),
        succeeded=sum(d.status == "succeeded" for d in members),
        failed=sum(d.status == "failed" for d in members),
        timed_out=sum(d.status == "timed_out" for d in members),
        self_test_failed=sum(
            d.status == "failed" and (d.reason or "").startswith("self-test") for d in members
        ),
    )


def gate_input(r: Rollout, wave: WaveState, now: float) -> GateInput:
    """What the gates of ``wave`` see at ``now`` (public so tests and views recompute it)."""
    fresh_after = wave.bake_until if wave.status == "baking" else float("inf")
    readings = WaveReadings.from_dict(wave.readings) if wave.readings else None
    if r.spec.target.kind == "alias":
        return GateInput(now=now, readings=readings, fresh_after=fresh_after)
    quiet = r.spec.gates.availability.silent_after_s
    watched = [d for _, d in r.wave_devices(wave.index) if d.touched and not d.left]
    silent = sum(1 for d in watched if d.silent_since is not None and now - d.silent_since >= quiet)
    return GateInput(
        now=now,
        install=install_counts(r, wave.index),
        readings=readings,
        fresh_after=fresh_after,
        watched=len(watched),
        silent=silent,
    )


def _judge(r: Rollout, wave: WaveState, now: float, out: Actions) -> tuple[str, list[GateResult]]:
    spec = r.spec
    if spec.target.kind == "devices":
        counts = install_counts(r, wave.index)
        if counts.total == 0:
            skip = GateResult("install", "pass", "no device in this wave: nothing to judge")
            return "pass", [skip]
        if wave.status == "deploying" and counts.in_flight == 0:
            wave.status, wave.baking_since, wave.bake_until = "baking", now, now + spec.bake_s
            out.append(
                Audit(
                    "rollout.wave_baking",
                    {"rollout": r.id, "wave": wave.index, "bake_until": wave.bake_until},
                )
            )
    results = [g.evaluate(gate_input(r, wave, now)) for g in gates_for(spec)]
    verdict = overall(results)
    if verdict == "pass" and (wave.status != "baking" or now < (wave.bake_until or 0.0)):
        verdict = "pending"
    deadline = (wave.bake_until or 0.0) + spec.gates.pending_deadline_s
    if verdict == "pending" and wave.status == "baking" and now >= deadline:
        stuck = [g.gate for g in results if g.verdict == "pending"]
        timeout = GateResult(
            "deadline",
            "fail",
            f"still pending after the deadline: {stuck}",
            {"pending_deadline_s": spec.gates.pending_deadline_s},
        )
        return "fail", [*results, timeout]
    return verdict, results


def _fail_wave(
    r: Rollout, wave: WaveState, results: list[GateResult], now: float, out: Actions
) -> None:
    failed = [g for g in results if g.verdict == "fail"]
    wave.status, wave.finished_at = "failed", now
    wave.gates = [g.to_dict() for g in results]
    wave.reason = "; ".join(f"{g.gate}: {g.reason}" for g in failed)
    policy = r.spec.on_failure
    out.append(
        Audit(
            "rollout.wave_failed",
            {"rollout": r.id, "wave": wave.index, "policy": policy, "gates": wave.gates},
        )
    )
    if policy == "pause":
        r.phase, r.reason = "paused", f"wave {wave.index} failed: {wave.reason}"
        out.append(
            Audit("rollout.paused", {"rollout": r.id, "actor": "engine", "reason": r.reason})
        )
        return
    scope = {wave.index} if policy == "abort-and-rollback-wave" else None
    roll_back(r, scope, f"wave {wave.index} failed: {wave.reason}", out)
    r.phase = "aborted" if scope is not None else "rolled_back"
    r.reason = f"wave {wave.index} failed: {wave.reason}"


def _dispatch(r: Rollout, now: float, out: Actions) -> None:
    spec = r.spec
    if spec.target.kind != "devices":
        return
    if r.phase == "running" and r.waves[r.current].status not in ("deploying", "baking"):
        return
    installing = sum(1 for d in r.devices.values() if d.status == "installing")
    free = spec.disruption_budget - r.busy_elsewhere - installing
    for device_id, d in r.wave_devices(r.current):
        if free <= 0:
            return
        if d.status != "queued" or d.left or d.package is None:
            continue
        if spec.maintenance is not None and not spec.maintenance.is_open(d.group, now):
            continue
        d.status, d.attempts, d.deployed_at = "installing", d.attempts + 1, now
        free -= 1
        key = f"{r.id}:{device_id}:{d.attempts}"
        out.append(Deploy(device_id, d.package, d.attempts, key, spec.device_timeout_s))


__all__ = [
    "RolloutConflict",
    "TERMINAL",
    "gate_input",
    "install_counts",
    "next_deadline",
    "plan_rollout",
    "start_rollout",
    "step",
    "step_many",
]
