"""Commands (per-device execution versions), packages, uploads (exactly once) and audit."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from control_plane.crypto import SampleKeyring
from control_plane.errors import InvalidInput, NotFound
from control_plane.store.notify import CATALOG, COMMANDS
from control_plane.store.records import (
    COMMAND_STATUSES,
    DEFAULT_LIMIT,
    AuditEntry,
    Command,
    NewUpload,
    NewWindow,
    Package,
    Page,
    Upload,
    UploadBatch,
)
from control_plane.store.sql.base import Database, Row, Tx, dumps, loads, page
from control_plane.store.sql.monitoring import WINDOW_ROWS, insert_windows

# rows per multi-row INSERT (6 parameters each): at most 50 parameters, so psycopg caches the
# statement's conversion (it re-parses longer ones at every call: ~10 us a window in a group
# of 16) and, the text being one of 8, PostgreSQL prepares it; SQLite is as fast either way
UPLOAD_CHUNK = 8


class SqlCommandRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add(
        self,
        device_id: str,
        kind: str,
        body: Mapping[str, Any],
        at: float,
        *,
        execution_key: str | None = None,
        rollout_id: str | None = None,
    ) -> Command:
        command_id = uuid.uuid4().hex
        with self.db.transaction() as tx:
            if execution_key is not None:
                # the unique index on execution_key backs this check against a racing writer
                known = tx.row("SELECT * FROM commands WHERE execution_key = ?", [execution_key])
                if known is not None:
                    return _command(known)
            # the row lock taken by this UPDATE orders concurrent writers (PostgreSQL)
            bumped = tx.row(
                "UPDATE devices SET next_version = next_version + 1 WHERE id = ?"
                " RETURNING next_version",
                [device_id],
            )
            if bumped is None:
                raise NotFound(f"device {device_id!r} is not enrolled")
            tx.execute(
                "INSERT INTO commands (id, device_id, execution_version, kind, body_json,"
                " status, created_at, execution_key, rollout_id)"
                " VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?)",
                [
                    command_id,
                    device_id,
                    int(bumped["next_version"]) - 1,
                    kind,
                    dumps(dict(body)),
                    at,
                    execution_key,
                    rollout_id,
                ],
            )
            tx.changed(COMMANDS)
            return _get(tx, command_id)

    def get(self, command_id: str) -> Command:
        with self.db.transaction() as tx:
            return _get(tx, command_id)

    def pending(self, device_id: str | None = None) -> list[Command]:
        sql = (
            "SELECT c.* FROM commands c JOIN devices d ON d.id = c.device_id"
            " WHERE c.status = 'pending' AND d.status = 'active'"
        )
        params: list[object] = []
        if device_id is not None:
            sql += " AND c.device_id = ?"
            params.append(device_id)
        with self.db.transaction() as tx:
            rows = tx.rows(sql + " ORDER BY c.device_id, c.execution_version", params)
            return [_command(r) for r in rows]

    def ack(
        self, command_id: str, device_id: str, ok: bool, result: Mapping[str, Any], at: float
    ) -> Command:
        with self.db.transaction() as tx:
            row = tx.row(
                "SELECT * FROM commands WHERE id = ? AND device_id = ?", [command_id, device_id]
            )
            if row is None:
                raise NotFound(f"command {command_id!r} is not for device {device_id!r}")
            if tx.execute(
                "UPDATE commands SET status = ?, acked_at = ?, result_json = ?"
                " WHERE id = ? AND status = 'pending'",
                ["ok" if ok else "failed", at, dumps(dict(result)), command_id],
            ):
                tx.changed(COMMANDS)
            return _get(tx, command_id)

    def sent_package(self, device_id: str, sha256: str) -> bool:
        # the body is written by dumps() (compact): LIKE narrows the rows on both backends
        # without their JSON dialects (its wildcards only widen), the decoded body decides
        needle = '%"sha256":' + dumps(sha256) + "%"
        with self.db.transaction() as tx:
            rows = tx.rows(
                "SELECT body_json FROM commands WHERE device_id = ? AND kind = 'deploy'"
                " AND body_json LIKE ?",
                [device_id, needle],
            )
        return any(loads(r["body_json"]).get("sha256") == sha256 for r in rows)

    def list(
        self,
        *,
        device_id: str | None = None,
        status: str | None = None,
        kind: str | None = None,
        limit: int = DEFAULT_LIMIT,
        offset: int = 0,
    ) -> Page[Command]:
        if status is not None and status not in COMMAND_STATUSES:
            raise InvalidInput(
                f"command status {status!r}: expected one of {sorted(COMMAND_STATUSES)}"
            )
        with self.db.transaction() as tx:
            rows, more = page(
                tx,
                "SELECT * FROM commands",
                {"device_id": device_id, "status": status, "kind": kind},
                "created_at, device_id, execution_version",
                limit,
                offset,
            )
            return Page([_command(r) for r in rows], more)


class SqlPackageRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def put(self, package: Package) -> Package:
        with self.db.transaction() as tx:
            if tx.execute(
                "INSERT INTO packages (sha256, package_id, model_name, model_version, profile_id,"
                " release, size_bytes, path, manifest_json, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (sha256) DO NOTHING",
                [
                    package.sha256,
                    package.package_id,
                    package.model_name,
                    package.model_version,
                    package.profile_id,
                    package.release,
                    package.size_bytes,
                    package.path,
                    dumps(package.manifest),
                    package.created_at,
                ],
            ):
                tx.changed(CATALOG)
            return _package(_package_row(tx, package.sha256))

    def get(self, sha256: str) -> Package:
        with self.db.transaction() as tx:
            return _package(_package_row(tx, sha256))

    def find(self, model_name: str, model_version: str, profile_id: str) -> Package | None:
        with self.db.transaction() as tx:
            row = tx.row(
                "SELECT * FROM packages WHERE model_name = ? AND model_version = ?"
                " AND profile_id = ? ORDER BY release DESC, created_at DESC LIMIT 1",
                [model_name, model_version, profile_id],
            )
            return None if row is None else _package(row)

    def list(
        self,
        *,
        model_name: str | None = None,
        model_version: str | None = None,
        profile_id: str | None = None,
        limit: int = DEFAULT_LIMIT,
        offset: int = 0,
    ) -> Page[Package]:
        where = {"model_name": model_name, "model_version": model_version, "profile_id": profile_id}
        with self.db.transaction() as tx:
            rows, more = page(
                tx,
                "SELECT * FROM packages",
                where,
                "model_name, model_version, profile_id, release, sha256",
                limit,
                offset,
            )
            return Page([_package(r) for r in rows], more)


class SqlUploadRepo:
    def __init__(self, db: Database, keys: SampleKeyring) -> None:
        self.db = db
        self.keys = keys  # captured samples of the windows are sealed with it
        # rows per INSERT statement (the ingest benchmark compares sizes)
        self.chunk = UPLOAD_CHUNK
        self.window_rows = WINDOW_ROWS

    def add(
        self,
        device_id: str,
        items: Sequence[NewUpload],
        transport: str,
        at: float,
        windows: Mapping[int, NewWindow] | None = None,
    ) -> list[int]:
        (stored,) = self.add_group([UploadBatch(device_id, items, transport, windows or {})], at)
        return stored

    def add_group(self, batches: Sequence[UploadBatch], at: float) -> list[list[int]]:
        """Several devices' uploads in one transaction (a group commit): per batch, the
        sequence numbers new to the store, exactly as :meth:`add` would answer each alone."""
        rows: list[tuple[str, NewUpload, str]] = []
        for b in batches:
            unique = list({item.seq: item for item in reversed(b.items)}.values())[::-1]
            rows += [(b.device_id, item, b.transport) for item in unique]
        new: set[tuple[str, int]] = set()
        with self.db.transaction() as tx:
            for i in range(0, len(rows), self.chunk):
                part = rows[i : i + self.chunk]
                values = ", ".join("(?, ?, ?, ?, ?, ?)" for _ in part)
                params: list[object] = []
                for device_id, item, transport in part:
                    params += [device_id, item.seq, item.kind, item.body_json, at, transport]
                # one statement a chunk; RETURNING names exactly the rows new to the store
                returned = tx.rows(
                    "INSERT INTO uploads (device_id, seq, kind, body_json, received_at, transport)"
                    f" VALUES {values} ON CONFLICT (device_id, seq) DO NOTHING"
                    " RETURNING device_id, seq",
                    params,
                )
                new.update((str(r["device_id"]), int(r["seq"])) for r in returned)
            stored: list[list[int]] = []
            for b in batches:  # a (device, seq) sent twice in one group is new to one batch
                mine = {(b.device_id, item.seq) for item in b.items} & new
                new -= mine
                stored.append(sorted(seq for _, seq in mine))
            insert_windows(
                tx,
                [
                    (b.device_id, seq, b.windows[seq])
                    for b, seqs in zip(batches, stored, strict=True)
                    for seq in seqs
                    if seq in b.windows
                ],
                at,
                self.keys,
                self.window_rows,
            )
        return stored

    def list(
        self,
        *,
        device_id: str | None = None,
        kind: str | None = None,
        since: float | None = None,
        limit: int = DEFAULT_LIMIT,
        offset: int = 0,
    ) -> Page[Upload]:
        extra = [] if since is None else [("received_at >= ?", [since])]
        with self.db.transaction() as tx:
            rows, more = page(
                tx,
                "SELECT * FROM uploads",
                {"device_id": device_id, "kind": kind},
                "device_id, seq",
                limit,
                offset,
                extra,
            )
            return Page([Upload(**r) for r in rows], more)


class SqlAuditRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add(
        self,
        actor: str,
        action: str,
        subject: str,
        at: float,
        *,
        before: Mapping[str, Any] | None = None,
        after: Mapping[str, Any] | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> AuditEntry:
        with self.db.transaction() as tx:
            row = tx.row(
                "INSERT INTO audit (at, actor, action, subject, before_json, after_json,"
                " detail_json) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING *",
                [
                    at,
                    actor,
                    action,
                    subject,
                    None if before is None else dumps(dict(before)),
                    None if after is None else dumps(dict(after)),
                    dumps(dict(detail or {})),
                ],
            )
            assert row is not None
            return _audit(row)

    def list(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        subject: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = DEFAULT_LIMIT,
        offset: int = 0,
    ) -> Page[AuditEntry]:
        extra: list[tuple[str, list[object]]] = []
        if since is not None:
            extra.append(("at >= ?", [since]))
        if until is not None:
            extra.append(("at < ?", [until]))
        where = {"actor": actor, "action": action, "subject": subject}
        with self.db.transaction() as tx:
            rows, more = page(tx, "SELECT * FROM audit", where, "id DESC", limit, offset, extra)
            return Page([_audit(r) for r in rows], more)


def _get(tx: Tx, command_id: str) -> Command:
    row = tx.row("SELECT * FROM commands WHERE id = ?", [command_id])
    if row is None:
        raise NotFound(f"command {command_id!r} does not exist")
    return _command(row)


def _command(row: Row) -> Command:
    return Command(
        id=row["id"],
        device_id=row["device_id"],
        execution_version=int(row["execution_version"]),
        kind=row["kind"],
        body=loads(row["body_json"]),
        status=row["status"],
        created_at=row["created_at"],
        acked_at=row["acked_at"],
        result=loads(row["result_json"]),
    )


def _package_row(tx: Tx, sha256: str) -> Row:
    row = tx.row("SELECT * FROM packages WHERE sha256 = ?", [sha256])
    if row is None:
        raise NotFound(f"package {sha256} is not in the catalog")
    return row


def _package(row: Row) -> Package:
    fields = {k: v for k, v in row.items() if k != "manifest_json"}
    return Package(**fields, manifest=loads(row["manifest_json"]))


def _audit(row: Row) -> AuditEntry:
    return AuditEntry(
        id=int(row["id"]),
        at=float(row["at"]),
        actor=row["actor"],
        action=row["action"],
        subject=row["subject"],
        before=loads(row["before_json"]),
        after=loads(row["after_json"]),
        detail=loads(row["detail_json"]),
    )
