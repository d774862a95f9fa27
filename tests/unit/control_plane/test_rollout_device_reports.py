"""What devices report feeds the engine: rollback acks, their own rollbacks, what they run."""

from __future__ import annotations

from control_plane.core.rollout import step
from control_plane.core.rollout_model import (
    Deploy,
    DeviceInstalled,
    DeviceReverted,
    DeviceRollbackFailed,
    DeviceRolledBack,
    Rollback,
    RollbackRequested,
    Rollout,
)
from control_plane.core.running import fold_status, running_package, self_rollback
from tests.unit.control_plane.test_rollout_transitions import T0, make


def _canaries() -> tuple[Rollout, list[str]]:
    r, actions = make()
    sent = sorted(a.device_id for a in actions if isinstance(a, Deploy))
    for d in sent:
        r, _ = step(r, DeviceInstalled(d), T0 + 1)
    return r, sent


def test_rollback_acks_record_the_outcome_only_for_a_rollback_sent() -> None:
    r, (a, b) = _canaries()
    ignored, _ = step(r, DeviceRolledBack(a), T0 + 2)  # no rollback was sent: nothing
    assert ignored.devices[a].rollback is None
    r, actions = step(r, RollbackRequested("op", "all"), T0 + 3)
    assert sorted(x.device_id for x in actions if isinstance(x, Rollback)) == [a, b]
    assert {r.devices[a].rollback, r.devices[b].rollback} == {"sent"}
    r, _ = step(r, DeviceRolledBack(a), T0 + 4)
    r, _ = step(r, DeviceRollbackFailed(b, "no previous version to roll back to"), T0 + 4)
    assert (r.devices[a].rollback, r.devices[b].rollback) == ("done", "failed")
    assert r.devices[b].rollback_reason == "no previous version to roll back to"
    again, actions = step(r, DeviceRolledBack(b), T0 + 5)  # a late duplicate changes nothing
    assert again.devices[b].rollback == "failed" and actions == []


def test_a_device_that_reverted_itself_is_failed_and_owed_no_rollback() -> None:
    r, (a, b) = _canaries()
    r, actions = step(r, DeviceReverted(a, "error rate 0.3 > 0.05"), T0 + 2)
    assert (r.devices[a].status, r.devices[a].reverted) == ("failed", True)
    assert r.devices[a].reason == "health watch rolled it back: error rate 0.3 > 0.05"
    # 1 of 2 failed > 40%: the wave fails and rolls back the other canary only
    assert r.waves[0].status == "failed" and r.phase == "aborted"
    assert [x.device_id for x in actions if isinstance(x, Rollback)] == [b]
    again, _ = step(r, DeviceReverted(b, "late"), T0 + 3)  # rolled back by us: not a revert
    assert not again.devices[b].reverted


def test_an_untouched_device_cannot_revert() -> None:
    r, _ = make()
    untouched = next(d for d, s in r.devices.items() if s.attempts == 0)
    after, actions = step(r, DeviceReverted(untouched, "x"), T0 + 1)
    assert after.devices[untouched].status == "queued" and not actions


def test_slots_fold_the_latest_report_per_model() -> None:
    first = {"event": "installed", "model_name": "m", "sha256": "a", "sequence": 2,
             "model_version": "7", "step": "not kept"}  # fmt: skip
    older = {"event": "installed", "model_name": "m", "sha256": "z", "sequence": 1}
    other = {"event": "health", "model_name": "m", "sha256": "q", "sequence": 9}
    slots = fold_status({}, [first, older, other])
    assert slots == {
        "m": {"event": "installed", "sha256": "a", "sequence": 2, "model_version": "7"}
    }
    assert fold_status(slots, [first, older]) is None  # nothing new
    back = {"event": "rolled_back", "model_name": "m", "sha256": "o", "from_sha256": "a",
            "cause": "health", "reason": "p95 9 ms", "sequence": 3}  # fmt: skip
    slots = fold_status(slots, [back])
    assert slots is not None and running_package(slots, "m") == "o"
    assert self_rollback(slots, "m", "a") == "p95 9 ms"
    assert self_rollback(slots, "m", "b") is None  # another package
    stamped = fold_status(slots, [{**back, "at": 100.0, "sequence": 5}])
    assert stamped is not None and self_rollback(stamped, "m", "a", since=100.0) == "p95 9 ms"
    assert self_rollback(stamped, "m", "a", since=101.0) is None  # before this deploy
    commanded = fold_status(slots, [{**back, "cause": "command", "sequence": 4}])
    assert commanded is not None and self_rollback(commanded, "m", "a") is None
    assert running_package({}, "m") is None
