"""The operators' alert rules per model (migration 0008)."""

from __future__ import annotations

import builtins

from control_plane.core.alerts import AlertRule, rule_from_dict, rule_to_dict
from control_plane.errors import NotFound
from control_plane.store.records import StoredAlertRule
from control_plane.store.sql.base import Database, Row, dumps, loads

_UPSERT = (
    "INSERT INTO alert_rules (model_name, name, metric, rule_json, enabled, updated_by,"
    " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (model_name, name) DO UPDATE SET metric = excluded.metric,"
    " rule_json = excluded.rule_json, enabled = excluded.enabled,"
    " updated_by = excluded.updated_by, updated_at = excluded.updated_at"
)
_ONE = "SELECT * FROM alert_rules WHERE model_name = ? AND name = ?"


class SqlAlertRuleRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def put(
        self, model: str, rule: AlertRule, enabled: bool, by: str, at: float
    ) -> StoredAlertRule:
        with self.db.transaction() as tx:
            tx.execute(
                _UPSERT,
                [model, rule.name, rule.metric, dumps(rule_to_dict(rule)), int(enabled), by, at,
                 at],
            )  # fmt: skip
            row = tx.row(_ONE, [model, rule.name])
        assert row is not None
        return _stored(row)

    def find(self, model: str, name: str) -> StoredAlertRule | None:
        with self.db.transaction() as tx:
            row = tx.row(_ONE, [model, name])
        return None if row is None else _stored(row)

    def list(self, model: str | None = None) -> builtins.list[StoredAlertRule]:
        with self.db.transaction() as tx:
            if model is None:
                rows = tx.rows("SELECT * FROM alert_rules ORDER BY model_name, name")
            else:
                rows = tx.rows(
                    "SELECT * FROM alert_rules WHERE model_name = ? ORDER BY name", [model]
                )
        return [_stored(r) for r in rows]

    def delete(self, model: str, name: str) -> StoredAlertRule:
        with self.db.transaction() as tx:
            row = tx.row(_ONE, [model, name])
            if row is None:
                raise NotFound(f"model {model!r} has no stored alert rule {name!r}")
            tx.execute("DELETE FROM alert_rules WHERE model_name = ? AND name = ?", [model, name])
        return _stored(row)


def _stored(row: Row) -> StoredAlertRule:
    return StoredAlertRule(
        model=row["model_name"],
        rule=rule_from_dict(loads(row["rule_json"])),
        enabled=bool(row["enabled"]),
        updated_by=row["updated_by"],
        created_at=float(row["created_at"]),
        updated_at=float(row["updated_at"]),
    )
