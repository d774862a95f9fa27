"""The durable outbox: telemetry windows and status reports waiting to be acknowledged.

One SQLite file (WAL, synchronous=FULL) in the state directory. Messages are
kept until the control plane acknowledges them, in order, across restarts.
The total payload size is bounded by a quota: when a new message would pass
it, the oldest messages are dropped and counted (``dropped``), telemetry
windows before status reports, so a device that stays offline for weeks keeps
its newest telemetry, the record of what it did, and says how much it lost.
A message may carry a ``dedupe_key``: putting the same key twice keeps one
copy, which makes re-running a step after a crash harmless.

The same file holds the agent's sequence counter, so (device id, sequence)
stays unique across restarts.

Bounds: a message over :data:`~edge_agent.core.limits.MAX_MESSAGE_BYTES` is
dropped and counted (the agent trims windows below it first), and
:meth:`Outbox.pending` hands out batches bounded in bytes as well as in count,
status reports first, so nothing ever waits behind a message the control plane
cannot take. The file is 0600; the WAL is checkpointed and truncated after the
outbox drains, and freed pages are given back (VACUUM of the empty outbox), so the disk
used stays near the quota. A failed write (disk full) rolls back only an open
transaction and raises the real error.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from edge_agent.core.limits import BATCH_BYTES, MAX_BATCH_MESSAGES, MAX_MESSAGE_BYTES
from edge_agent.files import private_file

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
WAL_LIMIT_BYTES = 256 * 1024
"""The WAL is truncated to this after a checkpoint."""
WAL_AUTOCHECKPOINT_PAGES = 64

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
        self.max_message_bytes = min(MAX_MESSAGE_BYTES, quota_bytes)
        self._lock = threading.Lock()
        private_file(path)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
        self._db.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
        self._db.executescript(_SCHEMA)
        private_file(path)  # the -wal and -shm files SQLite just made

    def _write(self, statements: Callable[[], _T]) -> _T:
        """Run ``statements`` in one immediate transaction (caller holds the lock).

        After SQLITE_FULL SQLite has already rolled back; a ROLLBACK then would
        fail with "no transaction is active" and hide the real error.
        """
        self._db.execute("BEGIN IMMEDIATE")
        try:
            result = statements()
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        return result

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
            return self._write(lambda: self._bump("sequence", 1))

    def put(self, kind: str, payload: dict[str, Any], dedupe_key: str | None = None) -> int | None:
        """Store one message; returns its id, or None if ``dedupe_key`` was already stored."""
        data = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode("utf-8")
        if len(data) > self.max_message_bytes:
            with self._lock:
                self._write(lambda: self._bump("dropped", 1))
            logger.warning(
                "outbox: %s message of %d bytes exceeds the limit of %d; dropped",
                kind,
                len(data),
                self.max_message_bytes,
            )
            return None

        def insert() -> tuple[int | None, int]:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO messages(kind, dedupe_key, payload, size, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (kind, dedupe_key, data, len(data), time.time()),
            )
            return (cursor.lastrowid if cursor.rowcount else None), self._enforce_quota()

        with self._lock:
            new_id, dropped = self._write(insert)
        if dropped:
            logger.warning("outbox over quota: dropped the %d oldest messages", dropped)
        return new_id

    def _enforce_quota(self) -> int:
        (total,) = self._db.execute("SELECT COALESCE(SUM(size), 0) FROM messages").fetchone()
        excess = int(total) - self.quota_bytes
        if excess <= 0:
            return 0
        ids: list[int] = []
        # windows go before status reports: a device must be able to say what it did
        for msg_id, size in self._db.execute(
            "SELECT id, size FROM messages ORDER BY kind = 'status', id"
        ):
            ids.append(int(msg_id))
            excess -= int(size)
            if excess <= 0:
                break
        self._db.executemany("DELETE FROM messages WHERE id = ?", [(i,) for i in ids])
        self._bump("dropped", len(ids))
        return len(ids)

    def pending(
        self, limit: int = MAX_BATCH_MESSAGES, max_bytes: int = BATCH_BYTES
    ) -> list[OutboxMessage]:
        """The next batch: status reports first, then the rest, each oldest first.

        At most ``limit`` messages and ``max_bytes`` of payload (the first message
        always, so a batch is never empty while messages wait); each call counts
        an attempt.
        """
        with self._lock:
            ids: list[tuple[int]] = []
            total = 0
            for msg_id, size in self._db.execute(
                "SELECT id, size FROM messages ORDER BY kind != 'status', id LIMIT ?", (limit,)
            ):
                if ids and total + int(size) > max_bytes:
                    break
                ids.append((int(msg_id),))
                total += int(size)
            rows = [
                self._db.execute(
                    "SELECT id, kind, payload, attempts FROM messages WHERE id = ?", i
                ).fetchone()
                for i in ids
            ]
            self._write(
                lambda: self._db.executemany(
                    "UPDATE messages SET attempts = attempts + 1 WHERE id = ?", ids
                )
            )
        return [OutboxMessage(int(r[0]), str(r[1]), json.loads(r[2]), int(r[3]) + 1) for r in rows]

    def ack(self, ids: list[int]) -> None:
        with self._lock:
            self._write(
                lambda: self._db.executemany(
                    "DELETE FROM messages WHERE id = ?", [(i,) for i in ids]
                )
            )
            (left,) = self._db.execute("SELECT COUNT(*) FROM messages").fetchone()
            if ids and not left:
                self._compact()

    def drop(self, msg_id: int, reason: str) -> None:
        """Drop one message the control plane can never take, and count it."""
        logger.warning("outbox: dropping message %d: %s", msg_id, reason)
        with self._lock:

            def delete() -> None:
                self._db.execute("DELETE FROM messages WHERE id = ?", (msg_id,))
                self._bump("dropped", 1)

            self._write(delete)

    def _compact(self) -> None:
        """Give freed pages back and truncate the WAL (the outbox just drained)."""
        try:
            self._db.execute("VACUUM")  # the outbox is empty: this copies almost nothing
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:  # a reader holds the WAL: the next drain tries again
            logger.info("outbox: checkpoint deferred: %s", exc)

    def disk_bytes(self) -> int:
        """Bytes the outbox takes on disk: the database, its WAL and shared-memory files."""
        names = (self.path, *(self.path.with_name(self.path.name + s) for s in ("-wal", "-shm")))
        return sum(p.stat().st_size for p in names if p.exists())

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
