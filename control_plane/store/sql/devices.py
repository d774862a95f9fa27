"""Devices (with labels) and enrollment tokens."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from control_plane.errors import Conflict, InvalidInput, NotFound
from control_plane.store.notify import DEVICES, TOKENS
from control_plane.store.records import (
    DEFAULT_LIMIT,
    DEVICE_STATUSES,
    Device,
    EnrollmentToken,
    NewDevice,
    Page,
)
from control_plane.store.sql.base import Database, Row, Tx, dumps, loads, page

_LABEL_KEY = re.compile(r"[a-z0-9]([a-z0-9._/-]{0,61}[a-z0-9])?")


def check_labels(labels: Mapping[str, str]) -> dict[str, str]:
    for key, value in labels.items():
        if not isinstance(key, str) or not _LABEL_KEY.fullmatch(key):
            raise InvalidInput(
                f"label key {key!r}: use 1-63 lower-case letters, digits, '.', '_', '-', '/'"
            )
        if not isinstance(value, str) or len(value) > 255:
            raise InvalidInput(f"label {key!r}: the value must be a string of at most 255 chars")
    return dict(labels)


class SqlDeviceRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def enroll(self, device: NewDevice, token_hash: str, at: float) -> Device:
        with self.db.transaction() as tx:
            used = tx.execute(
                "UPDATE enrollment_tokens SET used_by = ?, used_at = ? WHERE token_hash = ?"
                " AND used_by IS NULL AND (expires_at IS NULL OR expires_at > ?)"
                " AND (device_id IS NULL OR device_id = ?)",
                [device.id, at, token_hash, at, device.id],
            )
            if not used:
                _explain_unusable(tx, token_hash, device.id, at)
            tx.changed(TOKENS)
            return self._insert(tx, device, at)

    def add(self, device: NewDevice, at: float) -> Device:
        with self.db.transaction() as tx:
            return self._insert(tx, device, at)

    def _insert(self, tx: Tx, device: NewDevice, at: float) -> Device:
        labels = check_labels(device.labels)
        added = tx.execute(
            "INSERT INTO devices (id, token_hash, status, host_json, profile_id, agent_version,"
            " slots_json, enrolled_at, next_version) VALUES (?, ?, 'active', ?, ?, ?, '{}', ?, 1)"
            " ON CONFLICT (id) DO NOTHING",
            [
                device.id,
                device.token_hash,
                dumps(dict(device.host)),
                device.profile_id,
                device.agent_version,
                at,
            ],
        )
        if not added:
            raise Conflict(f"device {device.id!r} is already enrolled")
        _write_labels(tx, device.id, labels)
        tx.changed(DEVICES)
        return _get(tx, device.id)

    def get(self, device_id: str) -> Device:
        with self.db.transaction() as tx:
            return _get(tx, device_id)

    def find(self, device_id: str) -> Device | None:
        with self.db.transaction() as tx:
            row = tx.row("SELECT * FROM devices WHERE id = ?", [device_id])
            return None if row is None else _devices(tx, [row])[0]

    def revoked_ids(self) -> list[str]:
        with self.db.transaction() as tx:
            rows = tx.rows("SELECT id FROM devices WHERE status = 'revoked' ORDER BY id")
            return [str(r["id"]) for r in rows]

    def list(
        self,
        *,
        status: str | None = None,
        profile_id: str | None = None,
        labels: Mapping[str, str] | None = None,
        limit: int = DEFAULT_LIMIT,
        offset: int = 0,
    ) -> Page[Device]:
        if status is not None and status not in DEVICE_STATUSES:
            raise InvalidInput(
                f"device status {status!r}: expected one of {sorted(DEVICE_STATUSES)}"
            )
        extra = [
            (
                "EXISTS (SELECT 1 FROM device_labels l WHERE l.device_id = devices.id"
                " AND l.key = ? AND l.value = ?)",
                [key, value],
            )
            for key, value in sorted((labels or {}).items())
        ]
        with self.db.transaction() as tx:
            rows, more = page(
                tx,
                "SELECT * FROM devices",
                {"status": status, "profile_id": profile_id},
                "id",
                limit,
                offset,
                extra,
            )
            return Page(_devices(tx, rows), more)

    def revoke(self, device_id: str, at: float) -> Device:
        with self.db.transaction() as tx:
            _get(tx, device_id)
            if tx.execute(
                "UPDATE devices SET status = 'revoked', revoked_at = ?"
                " WHERE id = ? AND status = 'active'",
                [at, device_id],
            ):
                tx.changed(DEVICES)
            return _get(tx, device_id)

    def touch(self, device_id: str, at: float) -> None:
        with self.db.transaction() as tx:
            if not tx.execute("UPDATE devices SET last_seen = ? WHERE id = ?", [at, device_id]):
                raise NotFound(f"device {device_id!r} is not enrolled")

    def record_activity(
        self, seen: Mapping[str, float], refused: Mapping[str, int] | None = None
    ) -> None:
        with self.db.transaction() as tx:
            for device_id, at in sorted(seen.items()):
                tx.execute(
                    "UPDATE devices SET last_seen = ? WHERE id = ?"
                    " AND (last_seen IS NULL OR last_seen < ?)",
                    [at, device_id, at],
                )
            for device_id, count in sorted((refused or {}).items()):
                tx.execute(
                    "UPDATE devices SET uploads_refused = uploads_refused + ? WHERE id = ?",
                    [count, device_id],
                )

    def set_labels(self, device_id: str, labels: Mapping[str, str]) -> Device:
        labels = check_labels(labels)
        with self.db.transaction() as tx:
            _get(tx, device_id)
            tx.execute("DELETE FROM device_labels WHERE device_id = ?", [device_id])
            _write_labels(tx, device_id, labels)
            tx.changed(DEVICES)
            return _get(tx, device_id)

    def report(
        self,
        device_id: str,
        *,
        agent_version: str | None = None,
        profile_id: str | None = None,
        slots: Mapping[str, Any] | None = None,
    ) -> Device:
        with self.db.transaction() as tx:
            _get(tx, device_id)
            tx.execute(
                "UPDATE devices SET agent_version = COALESCE(?, agent_version),"
                " profile_id = COALESCE(?, profile_id), slots_json = COALESCE(?, slots_json)"
                " WHERE id = ?",
                [
                    agent_version,
                    profile_id,
                    None if slots is None else dumps(dict(slots)),
                    device_id,
                ],
            )
            return _get(tx, device_id)


class SqlEnrollmentTokenRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add(
        self, token_hash: str, device_id: str | None, created_at: float, expires_at: float | None
    ) -> EnrollmentToken:
        if expires_at is not None and expires_at <= created_at:
            raise InvalidInput("an enrollment token must expire after it is created")
        with self.db.transaction() as tx:
            if not tx.execute(
                "INSERT INTO enrollment_tokens (token_hash, device_id, created_at, expires_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (token_hash) DO NOTHING",
                [token_hash, device_id, created_at, expires_at],
            ):
                raise Conflict("an enrollment token with this hash exists")
            tx.changed(TOKENS)
            return _token(_token_row(tx, token_hash))

    def get(self, token_hash: str) -> EnrollmentToken:
        with self.db.transaction() as tx:
            return _token(_token_row(tx, token_hash))

    def list(
        self, *, unused_only: bool = False, limit: int = DEFAULT_LIMIT, offset: int = 0
    ) -> Page[EnrollmentToken]:
        extra: list[tuple[str, list[object]]] = [("used_by IS NULL", [])] if unused_only else []
        with self.db.transaction() as tx:
            rows, more = page(
                tx,
                "SELECT * FROM enrollment_tokens",
                {},
                "created_at, token_hash",
                limit,
                offset,
                extra,
            )
            return Page([_token(r) for r in rows], more)


def _explain_unusable(tx: Tx, token_hash: str, device_id: str, at: float) -> None:
    token = _token(_token_row(tx, token_hash))
    if token.used_by is not None:
        raise Conflict("enrollment token is already used")
    if token.expires_at is not None and token.expires_at <= at:
        raise Conflict("enrollment token has expired")
    raise Conflict(f"enrollment token is for device {token.device_id!r}, not {device_id!r}")


def _token_row(tx: Tx, token_hash: str) -> Row:
    row = tx.row("SELECT * FROM enrollment_tokens WHERE token_hash = ?", [token_hash])
    if row is None:
        raise NotFound("enrollment token is unknown")
    return row


def _token(row: Row) -> EnrollmentToken:
    return EnrollmentToken(
        token_hash=row["token_hash"],
        device_id=row["device_id"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        used_by=row["used_by"],
        used_at=row["used_at"],
    )


def _write_labels(tx: Tx, device_id: str, labels: Mapping[str, str]) -> None:
    for key, value in sorted(labels.items()):
        tx.execute(
            "INSERT INTO device_labels (device_id, key, value) VALUES (?, ?, ?)",
            [device_id, key, value],
        )


def _get(tx: Tx, device_id: str) -> Device:
    row = tx.row("SELECT * FROM devices WHERE id = ?", [device_id])
    if row is None:
        raise NotFound(f"device {device_id!r} is not enrolled")
    return _devices(tx, [row])[0]


def _devices(tx: Tx, rows: list[Row]) -> list[Device]:
    labels: dict[str, dict[str, str]] = {r["id"]: {} for r in rows}
    if rows:
        marks = ", ".join("?" for _ in rows)
        for lab in tx.rows(
            f"SELECT device_id, key, value FROM device_labels WHERE device_id IN ({marks})",
            [r["id"] for r in rows],
        ):
            labels[lab["device_id"]][lab["key"]] = lab["value"]
    return [
        Device(
            id=r["id"],
            token_hash=r["token_hash"],
            status=r["status"],
            host=loads(r["host_json"]),
            labels=labels[r["id"]],
            profile_id=r["profile_id"],
            agent_version=r["agent_version"],
            slots=loads(r["slots_json"]),
            enrolled_at=r["enrolled_at"],
            revoked_at=r["revoked_at"],
            last_seen=r["last_seen"],
            next_version=int(r["next_version"]),
            uploads_refused=int(r.get("uploads_refused") or 0),
        )
        for r in rows
    ]
