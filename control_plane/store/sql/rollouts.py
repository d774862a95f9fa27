"""Rollouts: the engine's state with a revision (compare-and-set) and an outbox of actions."""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from typing import Any

from control_plane.core.rollout_runner import StoredRollout
from control_plane.errors import Conflict, NotFound
from control_plane.store.records import DEFAULT_LIMIT, Command, Page, RolloutRow
from control_plane.store.repos import RevisionConflict
from control_plane.store.sql.base import Database, Row, Tx, dumps, loads, page
from control_plane.store.sql.fleet import _command


def _columns(state: Mapping[str, Any]) -> tuple[str, str, str, float]:
    spec = state["spec"]
    return str(spec["model"]), str(spec["version"]), str(state["phase"]), float(state["updated_at"])


class SqlRolloutRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, rollout_id: str, state: Mapping[str, Any], outbox: Sequence[Any]) -> int:
        model, version, phase, updated = _columns(state)
        with self.db.transaction() as tx:
            if tx.row("SELECT id FROM rollouts WHERE id = ?", [rollout_id]) is not None:
                raise Conflict(f"rollout {rollout_id!r} exists")
            tx.execute(
                "INSERT INTO rollouts (id, model, version, phase, spec_json, state_json, revision,"
                " outbox_json, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?, ?)",
                [
                    rollout_id,
                    model,
                    version,
                    phase,
                    dumps(state["spec"]),
                    dumps(dict(state)),
                    dumps(list(outbox)),
                    float(state["created_at"]),
                    updated,
                ],
            )
        return 1

    def load(self, rollout_id: str) -> StoredRollout:
        row = self.get(rollout_id)
        return StoredRollout(row.state, row.revision, row.outbox)

    def get(self, rollout_id: str) -> RolloutRow:
        with self.db.transaction() as tx:
            return _rollout(_row(tx, rollout_id))

    def save(
        self,
        rollout_id: str,
        state: Mapping[str, Any],
        outbox: Sequence[Mapping[str, Any]],
        expected_revision: int,
    ) -> int:
        _, _, phase, updated = _columns(state)
        with self.db.transaction() as tx:
            row = _row(tx, rollout_id)
            if int(row["revision"]) != expected_revision:
                raise RevisionConflict(
                    f"rollout {rollout_id!r} moved to revision {row['revision']} "
                    f"(expected {expected_revision}); try again"
                )
            kept = loads(row["outbox_json"]) + [dict(a) for a in outbox]
            if not tx.execute(
                "UPDATE rollouts SET state_json = ?, phase = ?, outbox_json = ?, updated_at = ?,"
                " revision = revision + 1 WHERE id = ? AND revision = ?",
                [dumps(dict(state)), phase, dumps(kept), updated, rollout_id, expected_revision],
            ):
                raise RevisionConflict(f"rollout {rollout_id!r} moved meanwhile; try again")
        return expected_revision + 1

    def clear_outbox(self, rollout_id: str, upto_revision: int) -> None:
        with self.db.transaction() as tx:
            tx.execute(
                "UPDATE rollouts SET outbox_json = '[]' WHERE id = ? AND revision = ?",
                [rollout_id, upto_revision],
            )

    def list(
        self,
        *,
        phase: str | None = None,
        model: str | None = None,
        limit: int = DEFAULT_LIMIT,
        offset: int = 0,
    ) -> Page[RolloutRow]:
        with self.db.transaction() as tx:
            rows, more = page(
                tx,
                "SELECT * FROM rollouts",
                {"phase": phase, "model": model},
                "created_at DESC, id",
                limit,
                offset,
            )
            return Page([_rollout(r) for r in rows], more)

    def ids_in_phases(
        self, phases: Sequence[str], *, dynamic_tail: bool | None = None
    ) -> builtins.list[str]:
        if not phases:
            return []
        marks = ", ".join("?" for _ in phases)
        sql = f"SELECT id, spec_json FROM rollouts WHERE phase IN ({marks})"
        params: list[object] = list(phases)
        if dynamic_tail:
            # spec_json is compact and sorted (dumps): LIKE narrows, the decoded spec decides
            sql += " AND spec_json LIKE ?"
            params.append('%"dynamic_tail":true%')
        with self.db.transaction() as tx:
            rows = tx.rows(sql + " ORDER BY created_at, id", params)
        return [
            str(r["id"])
            for r in rows
            if not dynamic_tail or loads(r["spec_json"]).get("dynamic_tail") is True
        ]

    def unfed_acks(self, rollout_id: str) -> builtins.list[Command]:
        with self.db.transaction() as tx:
            rows = tx.rows(
                "SELECT * FROM commands WHERE rollout_id = ? AND status <> 'pending'"
                " AND rollout_fed_at IS NULL ORDER BY acked_at, device_id, execution_version",
                [rollout_id],
            )
        return [_command(r) for r in rows]

    def mark_fed(self, command_ids: Sequence[str], at: float) -> None:
        with self.db.transaction() as tx:
            for command_id in command_ids:
                tx.execute("UPDATE commands SET rollout_fed_at = ? WHERE id = ?", [at, command_id])

    def installing_elsewhere(self, rollout_id: str) -> int:
        with self.db.transaction() as tx:
            row = tx.row(
                "SELECT COUNT(*) AS n FROM commands WHERE status = 'pending' AND kind = 'deploy'"
                " AND rollout_id IS NOT NULL AND rollout_id <> ?",
                [rollout_id],
            )
        return int(row["n"]) if row is not None else 0


def _row(tx: Tx, rollout_id: str) -> Row:
    row = tx.row("SELECT * FROM rollouts WHERE id = ?", [rollout_id])
    if row is None:
        raise NotFound(f"rollout {rollout_id!r} does not exist")
    return row


def _rollout(row: Row) -> RolloutRow:
    return RolloutRow(
        id=row["id"],
        model=row["model"],
        version=row["version"],
        phase=row["phase"],
        state=loads(row["state_json"]),
        revision=int(row["revision"]),
        outbox=loads(row["outbox_json"]),
        created_at=float(row["created_at"]),
        updated_at=float(row["updated_at"]),
    )
