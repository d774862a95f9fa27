"""The embedded store: SQLite in WAL mode through sqlite-utils.

Only this package touches the database. Repositories (``repos.py``) expose
what the rest of the control plane needs as plain methods, so another backend
(PostgreSQL for several replicas) is a new module, not a rewrite.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import sqlite_utils

from control_plane.errors import Unavailable

SCHEMA_VERSION = 2
BUSY_TIMEOUT = 2.0  # seconds a write waits for another process's lock before UNAVAILABLE
WAL_LIMIT = 64 * 1024 * 1024  # bytes the WAL is truncated to after a checkpoint

_TABLES: dict[str, tuple[dict[str, type], str | tuple[str, ...]]] = {
    "devices": (
        {
            "id": str,
            "token_hash": str,
            "status": str,  # active, revoked
            "host_json": str,
            "enrolled_at": float,
            "revoked_at": float,
            "last_seen": float,
            "next_version": int,
            "uploads_refused": int,  # over its ingest quota (counted, never silently dropped)
        },
        "id",
    ),
    "enrollment_tokens": (
        {
            "token_hash": str,
            "device_id": str,
            "created_at": float,
            "expires_at": float,
            "used_by": str,
            "used_at": float,
        },
        "token_hash",
    ),
    "packages": (
        {
            "sha256": str,
            "package_id": str,
            "model_name": str,
            "model_version": str,
            "profile_id": str,
            "release": int,
            "size_bytes": int,
            "path": str,
            "created_at": float,
        },
        "sha256",
    ),
    "commands": (
        {
            "id": str,
            "device_id": str,
            "execution_version": int,
            "kind": str,
            "body_json": str,
            "status": str,  # pending, ok, failed
            "created_at": float,
            "acked_at": float,
            "result_json": str,
        },
        "id",
    ),
    "uploads": (
        {
            "device_id": str,
            "seq": int,
            "kind": str,
            "body_json": str,
            "received_at": float,
            "transport": str,
        },
        ("device_id", "seq"),
    ),
    "audit": (
        {"id": int, "at": float, "actor": str, "action": str, "subject": str, "detail_json": str},
        "id",
    ),
}


class Store:
    """A thread-safe handle on the database (one connection, one lock).

    The file and its WAL are private (0600, in a 0700 directory). A write that
    finds the database locked by another process waits ``busy_timeout`` seconds,
    then raises :class:`Unavailable` (gRPC UNAVAILABLE), instead of stalling.
    """

    def __init__(self, path: Path | None, busy_timeout: float = BUSY_TIMEOUT) -> None:
        self.path = path
        if path is None:
            conn = sqlite3.connect(":memory:", check_same_thread=False)
        else:
            make_private_dir(path.parent)
            private_file(path)
            conn = sqlite3.connect(path, check_same_thread=False, timeout=busy_timeout)
        self.db = sqlite_utils.Database(conn)
        self.lock = threading.RLock()
        if path is not None:
            self.db.enable_wal()
            self.db.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT}")
            for suffix in ("-wal", "-shm"):
                sidecar = path.with_name(path.name + suffix)
                if sidecar.exists():
                    sidecar.chmod(0o600)
        self.db.execute("PRAGMA synchronous=NORMAL")
        with self.session():
            migrate(self.db)

    @contextlib.contextmanager
    def session(self) -> Iterator[sqlite_utils.Database]:
        """The database under the store's lock; a locked or busy file raises Unavailable."""
        with self.lock:
            try:
                yield self.db
            except sqlite3.OperationalError as exc:
                text = str(exc)
                if "locked" in text or "busy" in text:
                    if self.db.conn.in_transaction:
                        self.db.conn.rollback()
                    raise Unavailable(f"the store is busy ({text}); retry shortly") from exc
                raise

    def checkpoint(self) -> None:
        """Fold the WAL back into the database and truncate it (bounded disk use)."""
        if self.path is not None:
            with self.session():
                self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        with self.lock:
            self.db.conn.close()


def make_private_dir(path: Path) -> None:
    """Create ``path`` (and parents) and make it 0700: data dirs hold secrets and captures."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)


def private_file(path: Path) -> None:
    """Create ``path`` as an empty 0600 file if missing, and make an existing one 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)
    path.chmod(0o600)


def migrate(db: sqlite_utils.Database) -> None:
    for name, (columns, pk) in _TABLES.items():
        table = db.table(name)
        if not table.exists():
            table.create(
                columns, pk=pk, not_null={"id"} if pk == "id" and name != "audit" else None
            )
        else:  # a store from an older version: add the columns it lacks
            for column, kind in columns.items():
                if column not in table.columns_dict:
                    table.add_column(column, kind)
    db.table("commands").create_index(
        ["device_id", "execution_version"], unique=True, if_not_exists=True
    )
    db.table("uploads").create_index(["kind", "received_at"], if_not_exists=True)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def open_store(path: Path | None, busy_timeout: float = BUSY_TIMEOUT) -> Store:
    return Store(path, busy_timeout)
