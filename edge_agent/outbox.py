"""The durable outbox: telemetry windows and status reports waiting to be acknowledged.

One SQLite file (WAL, synchronous=FULL) in the state directory. Messages are
kept until the control plane acknowledges them, in order, across restarts.
The total payload size is bounded by a quota: when a new message would pass
it, the oldest messages are dropped and counted (``dropped``), so a device
that stays offline for weeks keeps its newest telemetry and says how much it
lost. A message may carry a ``dedupe_key``: putting the same key twice keeps
one copy, which makes re-running a step after a crash harmless.

The same file holds the agent's sequence counter, so (device id, sequence)
stays unique across restarts.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    dedupe_key TEXT UNIQUE,
    payload BLOB NOT NULL,
    size INTEGER NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


@dataclass(frozen=True)
class OutboxMessage:
    id: int
    kind: str
    payload: dict[str, Any]
    attempts: int


class Outbox:
    """Bounded, durable, ordered queue of JSON messages (thread-safe)."""

    def __init__(self, path: Path, quota_bytes: int = 64 * 1024 * 1024) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.quota_bytes = quota_bytes
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _bump(self, name: str, by: int) -> int:
        self._db.execute(
            "INSERT INTO counters(name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            (name, by),
        )
        row = self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return int(row[0])

    def next_sequence(self) -> int:
        """The next sequence number of this device (1, 2, ...), durable across restarts."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                value = self._bump("sequence", 1)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return value

    def put(self, kind: str, payload: dict[str, Any], dedupe_key: str | None = None) -> int | None:
        """Store one message; returns its id, or None if ``dedupe_key`` was already stored."""
        data = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode("utf-8")
        if len(data) > self.quota_bytes:
            with self._lock:
                self._bump("dropped", 1)
            logger.warning("outbox: %s message of %d bytes exceeds the quota", kind, len(data))
            return None
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cursor = self._db.execute(
                    "INSERT OR IGNORE INTO messages(kind, dedupe_key, payload, size, created_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (kind, dedupe_key, data, len(data), time.time()),
                )
                new_id = cursor.lastrowid if cursor.rowcount else None
                dropped = self._enforce_quota()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        if dropped:
            logger.warning("outbox over quota: dropped the %d oldest messages", dropped)
        return new_id

    def _enforce_quota(self) -> int:
        (total,) = self._db.execute("SELECT COALESCE(SUM(size), 0) FROM messages").fetchone()
        excess = int(total) - self.quota_bytes
        if excess <= 0:
            return 0
        ids: list[int] = []
        for msg_id, size in self._db.execute("SELECT id, size FROM messages ORDER BY id"):
            ids.append(int(msg_id))
            excess -= int(size)
            if excess <= 0:
                break
        self._db.executemany("DELETE FROM messages WHERE id = ?", [(i,) for i in ids])
        self._bump("dropped", len(ids))
        return len(ids)

    def pending(self, limit: int = 100) -> list[OutboxMessage]:
        """The oldest unacknowledged messages, oldest first; each call counts an attempt."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, kind, payload, attempts FROM messages ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
            self._db.executemany(
                "UPDATE messages SET attempts = attempts + 1 WHERE id = ?", [(r[0],) for r in rows]
            )
        return [OutboxMessage(int(r[0]), str(r[1]), json.loads(r[2]), int(r[3]) + 1) for r in rows]

    def ack(self, ids: list[int]) -> None:
        with self._lock:
            self._db.executemany("DELETE FROM messages WHERE id = ?", [(i,) for i in ids])

    def counter(self, name: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    @property
    def dropped(self) -> int:
        return self.counter("dropped")

    def stats(self) -> dict[str, int]:
        with self._lock:
            count, size = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM messages"
            ).fetchone()
        return {"messages": int(count), "bytes": int(size), "dropped": self.dropped}
