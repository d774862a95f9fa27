"""How each event changes a rollout's state (pure; called by :func:`rollout.step`).

Every handler mutates the *copy* ``step`` made and appends actions to ``out``;
the advancing that follows every event (timeouts, waves, dispatch) lives in
:mod:`control_plane.core.rollout`.
"""

from __future__ import annotations

from control_plane.core.rollout_model import (
    FINAL_PHASES,
    Abort,
    Action,
    Approve,
    Audit,
    DeviceFailed,
    DeviceInstalled,
    DeviceJoined,
    DeviceLeft,
    DeviceReverted,
    DeviceRollbackFailed,
    DeviceRolledBack,
    DeviceSeen,
    DeviceSelfTestFailed,
    DeviceState,
    DeviceTimedOut,
    DeviceWentSilent,
    Event,
    GateReadingsArrived,
    Pause,
    Resume,
    Rollback,
    RollbackRequested,
    Rollout,
    SetTraffic,
    TargetDevice,
    Tick,
    WaveState,
)
from control_plane.core.rollout_spec import DeviceTarget, RolloutSpec
from control_plane.core.waves import device_rank
from control_plane.errors import Conflict

Actions = list[Action]


class RolloutConflict(Conflict):
    """An operator command that does not apply in the rollout's current phase."""


def handle(r: Rollout, event: Event, now: float, out: Actions) -> None:
    """Apply one event to ``r`` (in place); RolloutConflict for a command out of place."""
    match event:
        case DeviceInstalled():
            _on_installed(r, event, now, out)
        case DeviceFailed() | DeviceSelfTestFailed():
            _on_failed(r, event, now, out)
        case DeviceTimedOut():
            _on_timed_out(r, event, now, out)
        case DeviceRolledBack() | DeviceRollbackFailed():
            _on_rollback_ack(r, event, now, out)
        case DeviceReverted():
            _on_reverted(r, event, now, out)
        case DeviceWentSilent():
            _on_silent(r, event, now, out)
        case DeviceSeen():
            _on_seen(r, event, now, out)
        case DeviceJoined():
            _on_joined(r, event, now, out)
        case DeviceLeft():
            _on_left(r, event, now, out)
        case GateReadingsArrived():
            _on_readings(r, event, now, out)
        case Pause():
            _on_pause(r, event, now, out)
        case Resume():
            _on_resume(r, event, now, out)
        case Abort():
            _on_abort(r, event, now, out)
        case RollbackRequested():
            _on_rollback(r, event, now, out)
        case Approve():
            _on_approve(r, event, now, out)
        case Tick():
            r.busy_elsewhere = max(0, event.busy_elsewhere)


def new_device(spec: RolloutSpec, device: TargetDevice, wave: int, rollout_id: str) -> DeviceState:
    group_label = spec.maintenance.group_label if spec.maintenance else "group"
    return DeviceState(
        wave=wave,
        rank=device_rank(rollout_id, device.id),
        profile_id=device.profile_id,
        group=device.labels.get(group_label),
        previous_package=device.current_package,
    )


def _awaiting_result(d: DeviceState) -> bool:
    # installing, queued for a retry after a timeout, or timed out for good: a late answer counts
    return d.status in ("installing", "timed_out") or (d.status == "queued" and d.touched)


def _on_installed(r: Rollout, e: DeviceInstalled, now: float, out: Actions) -> None:
    d = r.devices.get(e.device_id)
    if d is None or d.rolled_back or not _awaiting_result(d):
        return
    d.status, d.finished_at, d.reason = "succeeded", now, None


def _on_failed(
    r: Rollout, e: DeviceFailed | DeviceSelfTestFailed, now: float, out: Actions
) -> None:
    d = r.devices.get(e.device_id)
    if d is None or d.rolled_back or not _awaiting_result(d) or d.status == "timed_out":
        return
    kind = "self-test" if isinstance(e, DeviceSelfTestFailed) else "install"
    d.status, d.finished_at, d.reason = "failed", now, f"{kind}: {e.reason}".rstrip(": ")
    out.append(
        Audit(
            "rollout.device_failed",
            {"rollout": r.id, "device": e.device_id, "wave": d.wave, "reason": d.reason},
        )
    )


def _on_rollback_ack(
    r: Rollout, e: DeviceRolledBack | DeviceRollbackFailed, now: float, out: Actions
) -> None:
    d = r.devices.get(e.device_id)
    if d is None or d.rollback != "sent":
        return
    detail: dict[str, object] = {"rollout": r.id, "device": e.device_id, "wave": d.wave}
    if isinstance(e, DeviceRollbackFailed):
        d.rollback, d.rollback_reason = "failed", e.reason or "the device reported a failure"
        detail["reason"] = d.rollback_reason
    else:
        d.rollback = "done"
    detail["outcome"] = d.rollback
    out.append(Audit("rollout.device_rollback_acked", detail))


def _on_reverted(r: Rollout, e: DeviceReverted, now: float, out: Actions) -> None:
    d = r.devices.get(e.device_id)
    if d is None or not d.touched or d.reverted or d.rolled_back:
        return
    d.reverted = True
    d.status, d.reason = "failed", f"health watch rolled it back: {e.reason}".rstrip(": ")
    d.finished_at = d.finished_at or now
    out.append(
        Audit(
            "rollout.device_reverted",
            {"rollout": r.id, "device": e.device_id, "wave": d.wave, "reason": d.reason},
        )
    )


def _on_timed_out(r: Rollout, e: DeviceTimedOut, now: float, out: Actions) -> None:
    d = r.devices.get(e.device_id)
    if d is not None and d.status == "installing":
        time_out(r, e.device_id, d, now, out)


def time_out(r: Rollout, device_id: str, d: DeviceState, now: float, out: Actions) -> None:
    retry = d.attempts <= r.spec.retries and not d.left and r.phase not in FINAL_PHASES
    d.status = "queued" if retry else "timed_out"
    d.reason = f"timed out after attempt {d.attempts}"
    d.finished_at = None if retry else now
    out.append(
        Audit(
            "rollout.device_timed_out",
            {"rollout": r.id, "device": device_id, "attempt": d.attempts, "retry": retry},
        )
    )


def _on_silent(r: Rollout, e: DeviceWentSilent, now: float, out: Actions) -> None:
    d = r.devices.get(e.device_id)
    if d is not None and d.silent_since is None:
        d.silent_since = e.since


def _on_seen(r: Rollout, e: DeviceSeen, now: float, out: Actions) -> None:
    d = r.devices.get(e.device_id)
    if d is not None:
        d.silent_since = None


def _on_joined(r: Rollout, e: DeviceJoined, now: float, out: Actions) -> None:
    spec, dev = r.spec, e.device
    if not isinstance(spec.target, DeviceTarget) or not spec.target.matches(dev.labels):
        return
    known = r.devices.get(dev.id)
    if known is not None:
        if known.left:
            known.left = False
            if spec.dynamic_tail and known.status == "queued" and not known.touched:
                known.wave = max(known.wave, r.current)  # its wave may have gone by meanwhile
            detail = {"rollout": r.id, "device": dev.id, "wave": known.wave}
            out.append(Audit("rollout.device_rejoined", detail))
        return
    if not spec.dynamic_tail or r.phase in FINAL_PHASES:
        out.append(
            Audit(
                "rollout.device_join_ignored",
                {"rollout": r.id, "device": dev.id, "dynamic_tail": spec.dynamic_tail},
            )
        )
        return
    d = new_device(spec, dev, r.current, r.id)
    package = r.packages.get(dev.profile_id) if dev.profile_id is not None else None
    if package is None:
        d.status, d.reason = "skipped", f"no package for profile {dev.profile_id}"
    elif dev.current_package == package:
        d.status, d.reason, d.finished_at = "succeeded", "already runs this package", now
    d.package = package
    r.devices[dev.id] = d
    out.append(
        Audit(
            "rollout.device_joined",
            {"rollout": r.id, "device": dev.id, "wave": d.wave, "status": d.status},
        )
    )


def _on_left(r: Rollout, e: DeviceLeft, now: float, out: Actions) -> None:
    d = r.devices.get(e.device_id)
    if d is not None and not d.left:
        d.left = True
        out.append(
            Audit(
                "rollout.device_left",
                {"rollout": r.id, "device": e.device_id, "wave": d.wave, "status": d.status},
            )
        )


def _on_readings(r: Rollout, e: GateReadingsArrived, now: float, out: Actions) -> None:
    if not 0 <= e.wave < len(r.waves):
        return
    wave = r.waves[e.wave]
    if wave.readings is None or float(wave.readings["at"]) <= e.readings.at:
        wave.readings = e.readings.to_dict()


# ---- operator commands ------------------------------------------------------------------------


def _conflict(r: Rollout, what: str) -> RolloutConflict:
    return RolloutConflict(f"rollout {r.id} is {r.phase}: cannot {what}")


def _on_pause(r: Rollout, e: Pause, now: float, out: Actions) -> None:
    if r.phase != "running":
        raise _conflict(r, "pause")
    r.phase, r.reason = "paused", e.reason or f"paused by {e.actor}"
    out.append(Audit("rollout.paused", {"rollout": r.id, "actor": e.actor, "reason": r.reason}))


def _on_resume(r: Rollout, e: Resume, now: float, out: Actions) -> None:
    if r.phase != "paused":
        raise _conflict(r, "resume")
    wave = r.waves[r.current]
    if wave.status == "failed":
        # paused by a failed gate: bake again and judge on readings taken from now on
        # (install outcomes are facts and stay; the readings that failed it are dropped)
        wave.status, wave.readings = "deploying", None
        wave.baking_since = wave.bake_until = wave.finished_at = None
    r.phase, r.reason = "running", None
    out.append(Audit("rollout.resumed", {"rollout": r.id, "actor": e.actor, "wave": r.current}))


def _on_abort(r: Rollout, e: Abort, now: float, out: Actions) -> None:
    if r.phase not in ("running", "paused"):
        raise _conflict(r, "abort")
    r.phase, r.reason = "aborted", e.reason or f"aborted by {e.actor}"
    out.append(Audit("rollout.aborted", {"rollout": r.id, "actor": e.actor, "reason": r.reason}))


def _on_rollback(r: Rollout, e: RollbackRequested, now: float, out: Actions) -> None:
    if r.phase == "rolled_back":
        raise _conflict(r, "roll back")
    reason = e.reason or f"rollback ({e.scope}) by {e.actor}"
    roll_back(r, None if e.scope == "all" else {r.current}, reason, out)
    r.phase, r.reason = ("rolled_back" if e.scope == "all" else "aborted"), reason


def _on_approve(r: Rollout, e: Approve, now: float, out: Actions) -> None:
    wave = r.waves[r.current]
    if r.phase != "running" or wave.status != "awaiting_approval":
        raise _conflict(r, f"approve (wave {r.current} is {wave.status})")
    out.append(Audit("rollout.approved", {"rollout": r.id, "actor": e.actor, "wave": r.current}))
    start_wave(r, wave, now, out)


def start_wave(r: Rollout, wave: WaveState, now: float, out: Actions) -> None:
    wave.status, wave.started_at = "deploying", now
    out.append(Audit("rollout.wave_started", {"rollout": r.id, "wave": wave.index}))
    target = r.spec.target
    if target.kind == "alias" and wave.traffic is not None:
        r.traffic = wave.traffic
        out.append(
            SetTraffic(r.spec.model, target.alias, r.spec.version, wave.traffic, r.previous_version)
        )
        wave.status, wave.baking_since, wave.bake_until = "baking", now, now + r.spec.bake_s


def roll_back(r: Rollout, waves: set[int] | None, reason: str, out: Actions) -> None:
    """Send every touched device (of ``waves``, or all) back to what it ran before."""
    spec, count = r.spec, 0
    if spec.target.kind == "alias":
        if r.traffic > 0 and (waves is None or r.current in waves):
            r.traffic, count = 0, 1
            out.append(
                SetTraffic(spec.model, spec.target.alias, spec.version, 0, r.previous_version)
            )
    for device_id, d in sorted(r.devices.items(), key=lambda i: (i[1].rank, i[0])):
        if d.reverted:  # it went back by itself: nothing to send
            continue
        if d.touched and not d.rolled_back and (waves is None or d.wave in waves):
            d.rolled_back, d.rollback, count = True, "sent", count + 1
            key = f"{r.id}:{device_id}:rollback"
            out.append(Rollback(device_id, d.previous_package, d.package, key))
    scope = "all" if waves is None else sorted(waves)
    out.append(
        Audit(
            "rollout.rolled_back",
            {"rollout": r.id, "waves": scope, "targets": count, "reason": reason},
        )
    )
