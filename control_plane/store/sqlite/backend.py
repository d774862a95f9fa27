"""SQLite: one connection per store behind a lock, WAL, a short busy timeout.

Writers from other processes (another ``fleetcast`` process) are noticed by one
thread polling ``PRAGMA data_version`` on the store's connection: the number
moves only when *another* connection commits, so this process's own commits are
announced at commit time instead, with their topics.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from control_plane.crypto import SampleKeyring
from control_plane.errors import Conflict, InvalidInput, StoreUnavailable
from control_plane.store import migrations
from control_plane.store.notify import ANY, Broadcast, Subscription
from control_plane.store.sql.base import Params, Row
from control_plane.store.sql.store import SqlRepositories

logger = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 2000  # short: a write transaction here lasts milliseconds
POLL_SECONDS = 0.05
WAL_LIMIT = 64 * 1024 * 1024  # bytes the WAL is truncated to after a checkpoint
SYNCHRONOUS = ("NORMAL", "FULL")  # PRAGMA synchronous levels a store may be opened with


def _run(conn: sqlite3.Connection, sql: str, params: Params = ()) -> sqlite3.Cursor:
    try:
        return conn.execute(sql, list(params))
    except sqlite3.IntegrityError as exc:
        raise Conflict(f"the store refused a write: {exc}") from exc
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise StoreUnavailable(
                f"the store is busy (SQLite stays locked: {exc}); retry shortly"
            ) from exc
        raise


class _SqliteTx:
    """Takes the write lock (``BEGIN IMMEDIATE``) at its first statement that is not a SELECT.

    Reads before it run on their own WAL snapshot, so a method that only reads
    (authentication, pending commands) keeps answering while another process
    holds the write lock; writes are compare-and-set statements, which stay
    correct whatever was read before the lock.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.topics: set[str] = set()
        self.writing = False

    def _run(self, sql: str, params: Params) -> sqlite3.Cursor:
        if not self.writing and not sql.lstrip()[:6].upper() == "SELECT":
            # IMMEDIATE takes the write lock up front: no deadlock upgrading a read later
            _run(self.conn, "BEGIN IMMEDIATE")
            self.writing = True
        return _run(self.conn, sql, params)

    def execute(self, sql: str, params: Params = ()) -> int:
        return self._run(sql, params).rowcount

    def execute_many(self, sql: str, params: Sequence[Params]) -> None:
        if not params:
            return
        self._run(sql, params[0])  # takes the write lock like any write
        try:
            self.conn.executemany(sql, [list(p) for p in params[1:]])
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"the store refused a write: {exc}") from exc

    def rows(self, sql: str, params: Params = ()) -> list[Row]:
        cursor = self._run(sql, params)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]

    def row(self, sql: str, params: Params = ()) -> Row | None:
        rows = self.rows(sql, params)
        return rows[0] if rows else None

    def changed(self, topic: str) -> None:
        self.topics.add(topic)


class SqliteNotifier:
    """Local commits fan out at once; other processes' commits through ``data_version``."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db
        self.hub = Broadcast()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def subscribe(self) -> Subscription:
        if self._db.path is not None:  # ":memory:" has no other connections to watch
            with self._start_lock:
                if self._thread is None and not self._stop.is_set():
                    # read the baseline now: a commit right after subscribe() is not missed
                    self._thread = threading.Thread(
                        target=self._poll,
                        args=(self._db.data_version(),),
                        name="sqlite-data-version",
                        daemon=True,
                    )
                    self._thread.start()
        return self.hub.subscribe()

    def _poll(self, last: int) -> None:
        while not self._stop.wait(POLL_SECONDS):
            try:
                version = self._db.data_version()
            except sqlite3.Error:  # closed under us, or a transient lock
                logger.debug("data_version poll failed", exc_info=True)
                continue
            if version != last:
                last = version
                self.hub.publish({ANY})

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


class SqliteDatabase:
    """Implements :class:`control_plane.store.sql.base.Database` on one SQLite connection."""

    def __init__(
        self,
        path: Path | None,
        *,
        busy_timeout_ms: int = BUSY_TIMEOUT_MS,
        synchronous: str = "NORMAL",
    ) -> None:
        if synchronous.upper() not in SYNCHRONOUS:
            raise InvalidInput(
                f"sqlite synchronous={synchronous!r}: expected one of {', '.join(SYNCHRONOUS)}"
            )
        self.path = path
        if path is None:
            self.conn = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(
                path, check_same_thread=False, isolation_level=None, timeout=busy_timeout_ms / 1000
            )
            self.conn.execute("PRAGMA journal_mode=WAL")
            # SQLite checkpoints every 1000 pages; this truncates the WAL after each one
            self.conn.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT}")
        self.conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        # NORMAL under WAL: a commit is not fsynced (the WAL is, at checkpoints): never
        # corrupt, but a power loss can undo the last commits; FULL fsyncs every commit
        # (docs/store.md, "Durability of acknowledged uploads")
        self.conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
        self.conn.execute("PRAGMA foreign_keys=ON")
        self.lock = threading.RLock()
        self.notifier = SqliteNotifier(self)

    @contextmanager
    def transaction(self) -> Iterator[_SqliteTx]:
        with self.lock:
            tx = _SqliteTx(self.conn)
            try:
                yield tx
                if tx.writing:
                    _run(self.conn, "COMMIT")
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
        self.notifier.hub.publish(tx.topics)

    def data_version(self) -> int:
        with self.lock:
            (version,) = self.conn.execute("PRAGMA data_version").fetchone()
            return int(version)

    def schema_version(self) -> int:
        with self.lock:
            self.conn.execute(migrations.CREATE_TABLE)
            (version,) = self.conn.execute(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations"
            ).fetchone()
            return int(version)

    def migrate(self) -> int:
        steps = migrations.load_migrations("control_plane.store.sqlite.migrations")
        with self.transaction() as tx:
            tx.execute(migrations.CREATE_TABLE)
            current = tx.row("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations")
            assert current is not None
            if not current["v"] and tx.row("SELECT name FROM sqlite_master WHERE name = 'devices'"):
                raise migrations.MigrationError(
                    f"{self.path} holds tables of the old store (control_plane/store/db.py)"
                    " and no migration record: open a new file for this store"
                )
            for step in migrations.pending(steps, int(current["v"])):
                for statement in _statements(step.sql):
                    tx.execute(statement)
                tx.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    [step.version, step.name, time.time()],
                )
                logger.info("sqlite store: applied migration %04d_%s", step.version, step.name)
            latest = steps[-1].version if steps else 0
            tx.execute(f"PRAGMA user_version = {latest}")
        return self.schema_version()

    def close(self) -> None:
        self.notifier.close()
        with self.lock:
            if self.path is not None:
                try:  # fold the WAL back into the file (another process may hold it: fine)
                    self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                except sqlite3.Error as exc:
                    logger.debug("checkpoint at close: %s", exc)
            self.conn.close()


def _statements(script: str) -> Iterator[str]:
    """Split a migration into statements (``executescript`` would commit mid-transaction)."""
    pending = ""
    for line in script.splitlines(keepends=True):
        if not pending and (not line.strip() or line.lstrip().startswith("--")):
            continue
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending.strip()
            pending = ""
    if pending.strip():
        yield pending.strip()


def open_sqlite(
    path: Path | None, *, sample_keys: SampleKeyring | None = None, synchronous: str = "NORMAL"
) -> SqlRepositories:
    """Repositories on a SQLite file (created and migrated), or in memory with ``None``."""
    return SqlRepositories(SqliteDatabase(path, synchronous=synchronous), sample_keys=sample_keys)
