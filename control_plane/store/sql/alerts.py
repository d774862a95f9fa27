"""The alert book and the notification outbox (migration 0005)."""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Sequence

from control_plane.core.alerts import Alert, rule_from_dict, rule_to_dict, short_id
from control_plane.errors import Conflict, InvalidInput, NotFound
from control_plane.store.records import (
    ALERT_STATES,
    DEFAULT_LIMIT,
    DELIVERY_STATES,
    AlertDelivery,
    NewDelivery,
    Page,
    StoredAlert,
)
from control_plane.store.sql.base import Database, Row, Tx, dumps, loads, page

_INSERT = (
    "INSERT INTO alerts (id, alert_key, rule, series, model_name, model_version, severity,"
    " state, rule_json, labels_json, since, value, fired_at, resolved_at, acknowledged_by,"
    " acknowledged_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    # no conflict target: id and alert_key are both unique (one is the other's hash), and a
    # racing insert may trip either first; each must read as "already there"
    " ON CONFLICT DO NOTHING"
)
# compare-and-set on the state: of two replicas saving the same transition, one changes it
# (PostgreSQL re-checks the WHERE on the row the first committed; SQLite writes one at a time)
_MOVE = (
    "UPDATE alerts SET state = ?, value = ?, severity = ?, rule_json = ?, fired_at = ?,"
    " resolved_at = ?, updated_at = ? WHERE id = ? AND state <> ?"
)
# the rule and severity follow what the alert was last evaluated under (rules change)
_TOUCH = "UPDATE alerts SET value = ?, severity = ?, rule_json = ?, updated_at = ? WHERE id = ?"
CLAIM_S = 60.0  # a claimed delivery is due again after this if its sender never records it


class SqlAlertRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def live(self) -> builtins.list[StoredAlert]:
        with self.db.transaction() as tx:
            rows = tx.rows(
                "SELECT * FROM alerts WHERE state IN ('pending', 'firing') ORDER BY since, id"
            )
        return [_alert(r) for r in rows]

    def save(
        self,
        alerts: Sequence[Alert],
        gone: Sequence[str],
        deliveries: Sequence[NewDelivery],
        at: float,
    ) -> builtins.list[str]:
        with self.db.transaction() as tx:
            moved = {short_id(a) for a in alerts if _write_alert(tx, a, at)}
            for alert_id in gone:  # pending alerts whose breach ended before they fired
                tx.execute("DELETE FROM alerts WHERE id = ? AND state = 'pending'", [alert_id])
            # a transition another replica already saved is not notified twice
            ids = [
                _add_delivery(tx, d, i, at) for i, d in enumerate(deliveries) if d.alert_id in moved
            ]
            if alerts or gone:
                tx.changed("alerts")
        return ids

    def get(self, alert_id: str) -> StoredAlert:
        with self.db.transaction() as tx:
            row = tx.row("SELECT * FROM alerts WHERE id = ?", [alert_id])
        if row is None:
            raise NotFound(f"alert {alert_id!r} not found")
        return _alert(row)

    def list(
        self,
        *,
        state: str | None = None,
        model: str | None = None,
        version: str | None = None,
        severity: str | None = None,
        rule: str | None = None,
        limit: int = DEFAULT_LIMIT,
        offset: int = 0,
    ) -> Page[StoredAlert]:
        if state is not None and state not in ALERT_STATES:
            raise InvalidInput(f"alert state {state!r}: expected one of {', '.join(ALERT_STATES)}")
        with self.db.transaction() as tx:
            rows, more = page(
                tx,
                "SELECT * FROM alerts",
                {
                    "state": state,
                    "model_name": model,
                    "model_version": version,
                    "severity": severity,
                    "rule": rule,
                },
                "updated_at DESC, id",
                limit,
                offset,
            )
        return Page([_alert(r) for r in rows], more)

    def acknowledge(self, alert_id: str, by: str, at: float) -> StoredAlert:
        with self.db.transaction() as tx:
            row = tx.row("SELECT state, acknowledged_by FROM alerts WHERE id = ?", [alert_id])
            if row is None:
                raise NotFound(f"alert {alert_id!r} not found")
            if row["state"] != "firing":
                raise Conflict(
                    f"alert {alert_id!r} is {row['state']}: only a firing alert is acknowledged"
                )
            if row["acknowledged_by"] is None:
                tx.execute(
                    "UPDATE alerts SET acknowledged_by = ?, acknowledged_at = ?, updated_at = ?"
                    " WHERE id = ?",
                    [by, at, at, alert_id],
                )
                tx.changed("alerts")
            found = tx.row("SELECT * FROM alerts WHERE id = ?", [alert_id])
        assert found is not None
        return _alert(found)

    def firing_gates(self, model: str, version: str) -> builtins.list[StoredAlert]:
        with self.db.transaction() as tx:
            rows = tx.rows(
                "SELECT * FROM alerts WHERE state = 'firing' AND model_name = ?"
                " AND model_version = ? ORDER BY fired_at, id",
                [model, version],
            )
        return [a for a in map(_alert, rows) if a.alert.rule.gates_rollout]

    def counts(self) -> dict[tuple[str, str, str], int]:
        with self.db.transaction() as tx:
            rows = tx.rows(
                "SELECT rule, severity, state, COUNT(*) AS n FROM alerts"
                " WHERE state IN ('pending', 'firing') GROUP BY rule, severity, state"
            )
        return {(r["rule"], r["severity"], r["state"]): int(r["n"]) for r in rows}

    def due_deliveries(self, now: float, limit: int = 100) -> builtins.list[AlertDelivery]:
        with self.db.transaction() as tx:
            rows = tx.rows(
                "SELECT * FROM alert_deliveries WHERE state = 'pending' AND next_attempt_at <= ?"
                " ORDER BY created_at, id LIMIT ?",
                [now, limit],
            )
        return [_delivery(r) for r in rows]

    def claim_due(
        self, now: float, lease_s: float = CLAIM_S, limit: int = 100
    ) -> builtins.list[AlertDelivery]:
        """The deliveries due now that this caller wins: each is pushed ``lease_s`` ahead
        (compare-and-set on its due time), so another replica's sender skips it; if this one
        never records the attempt, it is due again after the lease."""
        claimed = []
        for d in self.due_deliveries(now, limit):
            with self.db.transaction() as tx:
                won = tx.execute(
                    "UPDATE alert_deliveries SET next_attempt_at = ? WHERE id = ?"
                    " AND state = 'pending' AND next_attempt_at = ?",
                    [now + lease_s, d.id, d.next_attempt_at],
                )
            if won:
                claimed.append(d)
        return claimed

    def delivery_attempted(
        self, delivery_id: str, at: float, error: str | None, retry_at: float | None
    ) -> AlertDelivery:
        """Record one attempt: delivered (no error), pending again (``retry_at``), or failed."""
        with self.db.transaction() as tx:
            if error is None:
                tx.execute(
                    "UPDATE alert_deliveries SET attempts = attempts + 1, state = 'delivered',"
                    " delivered_at = ?, last_error = NULL WHERE id = ?",
                    [at, delivery_id],
                )
            else:
                tx.execute(
                    "UPDATE alert_deliveries SET attempts = attempts + 1, state = ?,"
                    " next_attempt_at = ?, last_error = ? WHERE id = ?",
                    [
                        "failed" if retry_at is None else "pending",
                        at if retry_at is None else retry_at,
                        error[:2000],
                        delivery_id,
                    ],
                )
            row = tx.row("SELECT * FROM alert_deliveries WHERE id = ?", [delivery_id])
        if row is None:
            raise NotFound(f"delivery {delivery_id!r} not found")
        return _delivery(row)

    def deliveries(
        self,
        *,
        alert_id: str | None = None,
        state: str | None = None,
        limit: int = DEFAULT_LIMIT,
        offset: int = 0,
    ) -> Page[AlertDelivery]:
        if state is not None and state not in DELIVERY_STATES:
            raise InvalidInput(
                f"delivery state {state!r}: expected one of {', '.join(DELIVERY_STATES)}"
            )
        with self.db.transaction() as tx:
            rows, more = page(
                tx,
                "SELECT * FROM alert_deliveries",
                {"alert_id": alert_id, "state": state},
                "created_at DESC, id DESC",
                limit,
                offset,
            )
        return Page([_delivery(r) for r in rows], more)

    def delivery_counts(self) -> dict[tuple[str, str], int]:
        with self.db.transaction() as tx:
            rows = tx.rows(
                "SELECT channel, state, COUNT(*) AS n FROM alert_deliveries GROUP BY channel, state"
            )
        return {(r["channel"], r["state"]): int(r["n"]) for r in rows}


def _write_alert(tx: Tx, alert: Alert, at: float) -> bool:
    """Insert or update ``alert``; True when this write changed its stored state."""
    aid, labels = short_id(alert), dict(alert.labels)
    inserted = tx.execute(
        _INSERT,
        [aid, alert.id, alert.rule.name, dumps(labels), labels.get("model"),
         labels.get("version"), alert.rule.severity, alert.state,
         dumps(rule_to_dict(alert.rule)), dumps(labels), alert.since, alert.value,
         alert.fired_at, alert.resolved_at, alert.acknowledged_by, None, at],
    )  # fmt: skip
    if inserted:
        return True
    rule = dumps(rule_to_dict(alert.rule))
    params = [alert.state, alert.value, alert.rule.severity, rule, alert.fired_at,
              alert.resolved_at, at, aid, alert.state]  # fmt: skip
    if tx.execute(_MOVE, params):
        return True
    tx.execute(_TOUCH, [alert.value, alert.rule.severity, rule, at, aid])
    return False


def _add_delivery(tx: Tx, d: NewDelivery, index: int, at: float) -> str:
    # sortable: the creation time, then the order inside one save
    delivery_id = f"dl-{int(at * 1000):014d}-{index:04d}-{uuid.uuid4().hex[:8]}"
    tx.execute(
        "INSERT INTO alert_deliveries (id, alert_id, channel, target, kind, body_json, state,"
        " attempts, max_attempts, next_attempt_at, last_error, created_at, delivered_at)"
        " VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?, NULL, ?, NULL)",
        [delivery_id, d.alert_id, d.channel, d.target, d.kind, dumps(dict(d.body)),
         d.max_attempts, at, at],
    )  # fmt: skip
    return delivery_id


def _alert(row: Row) -> StoredAlert:
    labels = loads(row["labels_json"])
    alert = Alert(
        rule=rule_from_dict(loads(row["rule_json"])),
        labels=tuple(sorted((str(k), str(v)) for k, v in labels.items())),
        state=row["state"],
        since=float(row["since"]),
        value=float(row["value"]),
        fired_at=None if row["fired_at"] is None else float(row["fired_at"]),
        resolved_at=None if row["resolved_at"] is None else float(row["resolved_at"]),
        acknowledged_by=row["acknowledged_by"],
    )
    return StoredAlert(
        id=row["id"],
        alert=alert,
        acknowledged_at=None if row["acknowledged_at"] is None else float(row["acknowledged_at"]),
        updated_at=float(row["updated_at"]),
    )


def _delivery(row: Row) -> AlertDelivery:
    return AlertDelivery(
        id=row["id"],
        alert_id=row["alert_id"],
        channel=row["channel"],
        target=row["target"],
        kind=row["kind"],
        body=loads(row["body_json"]),
        state=row["state"],
        attempts=int(row["attempts"]),
        max_attempts=int(row["max_attempts"]),
        next_attempt_at=float(row["next_attempt_at"]),
        last_error=row["last_error"],
        created_at=float(row["created_at"]),
        delivered_at=None if row["delivered_at"] is None else float(row["delivered_at"]),
    )
