"""Rollouts (state, revision, outbox) and their commands (execution keys, acks), both backends."""

from __future__ import annotations

from typing import Any

import pytest
from store_support import OpenStore

from control_plane.errors import Conflict, NotFound
from control_plane.store.records import NewDevice
from control_plane.store.repos import RevisionConflict
from control_plane.store.sql.store import SqlRepositories

pytestmark = pytest.mark.integration


def _state(phase: str = "running", at: float = 10.0, model: str = "digits") -> dict[str, Any]:
    return {
        "id": "r1",
        "spec": {"model": model, "version": "7"},
        "phase": phase,
        "created_at": 10.0,
        "updated_at": at,
    }


def test_create_load_save_with_compare_and_set(repos: SqlRepositories) -> None:
    assert repos.rollouts.create("r1", _state(), [{"type": "Audit"}]) == 1
    with pytest.raises(Conflict, match="exists"):
        repos.rollouts.create("r1", _state(), [])
    stored = repos.rollouts.load("r1")
    assert (stored.state, stored.revision, stored.outbox) == (_state(), 1, [{"type": "Audit"}])
    assert repos.rollouts.save("r1", _state("paused", 11.0), [{"type": "Deploy"}], 1) == 2
    with pytest.raises(RevisionConflict, match="revision 2"):
        repos.rollouts.save("r1", _state("running", 12.0), [], 1)  # a stale writer loses
    row = repos.rollouts.get("r1")
    assert (row.phase, row.revision, row.model, row.version) == ("paused", 2, "digits", "7")
    assert row.outbox == [{"type": "Audit"}, {"type": "Deploy"}]  # appended, not replaced
    assert (row.created_at, row.updated_at) == (10.0, 11.0)
    with pytest.raises(NotFound, match="rollout 'nope'"):
        repos.rollouts.load("nope")


def test_clear_outbox_only_at_the_revision_it_was_saved_with(repos: SqlRepositories) -> None:
    repos.rollouts.create("r1", _state(), [{"type": "A"}])
    repos.rollouts.save("r1", _state(), [{"type": "B"}], 1)
    repos.rollouts.clear_outbox("r1", 1)  # a later save appended: kept (re-applying is safe)
    assert len(repos.rollouts.load("r1").outbox) == 2
    repos.rollouts.clear_outbox("r1", 2)
    assert repos.rollouts.load("r1").outbox == []


def test_compare_and_set_across_two_store_instances(open_store: OpenStore) -> None:
    first, second = open_store(), open_store()
    first.rollouts.create("r1", _state(), [])
    assert second.rollouts.save("r1", _state("paused"), [], 1) == 2
    with pytest.raises(RevisionConflict):
        first.rollouts.save("r1", _state("aborted"), [], 1)
    assert first.rollouts.get("r1").phase == "paused"


def test_list_and_phases(repos: SqlRepositories) -> None:
    for i, phase in enumerate(["running", "completed", "paused"]):
        state = {**_state(phase), "id": f"r{i}", "created_at": float(i)}
        repos.rollouts.create(f"r{i}", state, [])
    assert [r.id for r in repos.rollouts.list().items] == ["r2", "r1", "r0"]  # newest first
    assert [r.id for r in repos.rollouts.list(phase="completed").items] == ["r1"]
    assert [r.id for r in repos.rollouts.list(model="other").items] == []
    assert repos.rollouts.ids_in_phases(["running", "paused"]) == ["r0", "r2"]
    tail = {**_state("completed"), "id": "r3", "created_at": 3.0}
    tail["spec"] = {**tail["spec"], "dynamic_tail": True}
    repos.rollouts.create("r3", tail, [])
    assert repos.rollouts.ids_in_phases(["completed"]) == ["r1", "r3"]
    assert repos.rollouts.ids_in_phases(["completed"], dynamic_tail=True) == ["r3"]


def test_execution_key_queues_one_command_and_acks_are_fed_once(repos: SqlRepositories) -> None:
    for device in ("cam-1", "cam-2"):
        repos.devices.add(NewDevice(device, "h"), at=1.0)
    first = repos.commands.add(
        "cam-1", "deploy", {"sha256": "a"}, 2.0, execution_key="r1:cam-1:1", rollout_id="r1"
    )
    again = repos.commands.add(
        "cam-1", "deploy", {"sha256": "a"}, 3.0, execution_key="r1:cam-1:1", rollout_id="r1"
    )
    assert again == first
    assert repos.devices.get("cam-1").next_version == 2  # no execution version spent
    other = repos.commands.add(
        "cam-2", "deploy", {"sha256": "a"}, 2.0, execution_key="r2:cam-2:1", rollout_id="r2"
    )
    repos.commands.add("cam-2", "config", {}, 2.0)  # no key: not a rollout's
    assert repos.rollouts.installing_elsewhere("r1") == 1  # r2's pending deploy
    assert repos.rollouts.installing_elsewhere("r2") == 1
    assert repos.rollouts.unfed_acks("r1") == []
    repos.commands.ack(first.id, "cam-1", False, {"error": "bad", "step": "selftest"}, 4.0)
    repos.commands.ack(other.id, "cam-2", True, {}, 4.0)
    acks = repos.rollouts.unfed_acks("r1")
    assert [(c.id, c.status, c.result) for c in acks] == [
        (first.id, "failed", {"error": "bad", "step": "selftest"})
    ]
    repos.rollouts.mark_fed([first.id], 5.0)
    assert repos.rollouts.unfed_acks("r1") == []
    assert [c.id for c in repos.rollouts.unfed_acks("r2")] == [other.id]
    assert repos.rollouts.installing_elsewhere("r1") == 0
