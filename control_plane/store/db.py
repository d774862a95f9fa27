"""The embedded store: SQLite in WAL mode through sqlite-utils.

Only this package touches the database. Repositories (``repos.py``) expose
what the rest of the control plane needs as plain methods, so another backend
(PostgreSQL for several replicas) is a new module, not a rewrite.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import sqlite_utils

SCHEMA_VERSION = 1

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
        },
        "id",
    ),
    "enrollment_tokens": (
        {
            "token_hash": str,
            "device_id": str,
            "created_at": float,
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
    """A thread-safe handle on the database (one connection, one lock)."""

    def __init__(self, path: Path | None) -> None:
        if path is None:
            conn = sqlite3.connect(":memory:", check_same_thread=False)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, check_same_thread=False, timeout=30)
        self.db = sqlite_utils.Database(conn)
        self.lock = threading.RLock()
        if path is not None:
            self.db.enable_wal()
        self.db.execute("PRAGMA synchronous=NORMAL")
        migrate(self.db)

    def close(self) -> None:
        with self.lock:
            self.db.conn.close()


def migrate(db: sqlite_utils.Database) -> None:
    for name, (columns, pk) in _TABLES.items():
        table = db.table(name)
        if not table.exists():
            table.create(
                columns, pk=pk, not_null={"id"} if pk == "id" and name != "audit" else None
            )
    db.table("commands").create_index(
        ["device_id", "execution_version"], unique=True, if_not_exists=True
    )
    db.table("uploads").create_index(["kind", "received_at"], if_not_exists=True)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def open_store(path: Path | None) -> Store:
    return Store(path)
