"""PostgreSQL through psycopg 3 and a connection pool; LISTEN/NOTIFY for changes.

Writes that matter call ``pg_notify`` inside their transaction, so the news
leaves only if the write commits. Each store keeps one extra connection that
``LISTEN``s and fans the payloads (topics) out to its subscriptions; when that
connection drops it reconnects and announces :data:`ANY`, since notifications
sent meanwhile are lost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from control_plane.crypto import SampleKeyring
from control_plane.errors import Conflict, StoreUnavailable
from control_plane.store import migrations
from control_plane.store.notify import ANY, Broadcast, Subscription
from control_plane.store.sql.base import Params, Row
from control_plane.store.sql.store import SqlRepositories

logger = logging.getLogger(__name__)

CHANNEL = "fleetcast_changes"
_MIGRATION_LOCK = 0x666C6374  # pg_advisory_xact_lock key: "flct"


def _sql(sql: str) -> str:
    """The shared SQL uses ``?``; psycopg wants ``%s`` (and a literal ``%`` doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


class _PgTx:
    def __init__(self, conn: psycopg.Connection[Row]) -> None:
        self.conn = conn
        self.topics: set[str] = set()

    def execute(self, sql: str, params: Params = ()) -> int:
        return self._run(sql, params).rowcount

    def execute_many(self, sql: str, params: Sequence[Params]) -> None:
        if not params:
            return
        try:
            with self.conn.cursor() as cursor:
                cursor.executemany(_sql(sql), [list(p) for p in params])
        except psycopg.errors.IntegrityError as exc:
            raise Conflict(f"the store refused a write: {exc}") from exc
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"PostgreSQL store: {exc}") from exc

    def rows(self, sql: str, params: Params = ()) -> list[Row]:
        return self._run(sql, params).fetchall()

    def _run(self, sql: str, params: Params) -> psycopg.Cursor[Row]:
        try:
            return self.conn.execute(_sql(sql), list(params))
        except psycopg.errors.IntegrityError as exc:
            raise Conflict(f"the store refused a write: {exc}") from exc
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"PostgreSQL store: {exc}") from exc

    def row(self, sql: str, params: Params = ()) -> Row | None:
        rows = self.rows(sql, params)
        return rows[0] if rows else None

    def changed(self, topic: str) -> None:
        self.topics.add(topic)


class PostgresNotifier:
    """One LISTEN connection per store, started by the first subscription."""

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        self.hub = Broadcast()
        self._stop = threading.Event()
        self._listening = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def subscribe(self) -> Subscription:
        sub = self.hub.subscribe()
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._listen, name="pg-listen", daemon=True)
                self._thread.start()
        if not self._listening.wait(timeout=10):
            sub.close()
            raise StoreUnavailable("cannot LISTEN on the PostgreSQL store")
        return sub

    def _listen(self) -> None:
        reconnect = False
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._listening.set()
                    if reconnect:
                        self.hub.publish({ANY})
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.2):
                            self.hub.publish({note.payload or ANY})
            except psycopg.Error:
                if self._stop.is_set():
                    return
                logger.warning("PostgreSQL LISTEN connection lost; reconnecting", exc_info=True)
                reconnect = True
                self._stop.wait(0.5)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


class PostgresDatabase:
    """Implements :class:`control_plane.store.sql.base.Database` over a psycopg pool."""

    def __init__(
        self, conninfo: str, *, min_size: int = 1, max_size: int = 10, open_timeout: float = 10.0
    ) -> None:
        self.conninfo = conninfo
        self.pool: ConnectionPool[psycopg.Connection[Row]] = ConnectionPool(
            conninfo,
            min_size=min_size,
            max_size=max_size,
            kwargs={"row_factory": dict_row},
            open=False,
            name="fleetcast-store",
        )
        try:
            self.pool.open(wait=True, timeout=open_timeout)
        except PoolTimeout as exc:
            self.pool.close()
            raise StoreUnavailable(f"PostgreSQL at {_where(conninfo)} is unreachable") from exc
        self.notifier = PostgresNotifier(conninfo)

    @contextmanager
    def transaction(self) -> Iterator[_PgTx]:
        with self.pool.connection() as conn, conn.transaction():
            tx = _PgTx(conn)
            yield tx
            for topic in sorted(tx.topics):
                conn.execute("SELECT pg_notify(%s, %s)", [CHANNEL, topic])

    def schema_version(self) -> int:
        with self.transaction() as tx:
            tx.execute(migrations.CREATE_TABLE)
            row = tx.row("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations")
            assert row is not None
            return int(row["v"])

    def migrate(self) -> int:
        steps = migrations.load_migrations("control_plane.store.postgres.migrations")
        with self.pool.connection() as conn, conn.transaction():
            # two replicas starting together: the second waits, then finds nothing to do
            conn.execute("SELECT pg_advisory_xact_lock(%s)", [_MIGRATION_LOCK])
            conn.execute(migrations.CREATE_TABLE)
            row = conn.execute(
                "SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations"
            ).fetchone()
            assert row is not None
            for step in migrations.pending(steps, int(row["v"])):
                conn.execute(step.sql.encode())
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (%s, %s, %s)",
                    [step.version, step.name, time.time()],
                )
                logger.info("postgres store: applied migration %04d_%s", step.version, step.name)
        return self.schema_version()

    def close(self) -> None:
        self.notifier.close()
        self.pool.close()


def _where(conninfo: str) -> str:
    info: dict[str, Any] = psycopg.conninfo.conninfo_to_dict(conninfo)
    return f"{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"


def open_postgres(
    conninfo: str, *, open_timeout: float = 10.0, sample_keys: SampleKeyring | None = None
) -> SqlRepositories:
    """Repositories on a PostgreSQL database (``postgresql://user@host:port/db``), migrated."""
    return SqlRepositories(
        PostgresDatabase(conninfo, open_timeout=open_timeout), sample_keys=sample_keys
    )
