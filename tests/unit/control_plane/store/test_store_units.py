"""The store's pure parts and the in-memory store: no server, milliseconds."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from control_plane.errors import InvalidInput, StoreUnavailable
from control_plane.store.factory import open_repositories
from control_plane.store.migrations import MigrationError, load_migrations, pending
from control_plane.store.notify import COMMANDS, DEVICES, Broadcast
from control_plane.store.postgres.backend import open_postgres
from control_plane.store.records import NewDevice
from control_plane.store.sql.store import SqlRepositories
from control_plane.store.sqlite.backend import SqliteDatabase


def test_memory_store_is_migrated_and_usable() -> None:
    repos = open_repositories(":memory:")
    try:
        assert repos.schema_version() == 10
        repos.devices.add(NewDevice("d1", "h"), at=1.0)
        sub = repos.notifier.subscribe()
        repos.commands.add("d1", "deploy", {}, at=2.0)
        assert sub.wait(1.0) == {COMMANDS}
    finally:
        repos.close()


@pytest.mark.parametrize("url", ["sqlite:///{tmp}/a.db", "{tmp}/b.db"])
def test_sqlite_urls_and_paths_open_a_file(url: str, tmp_path: Path) -> None:
    repos = open_repositories(url.format(tmp=tmp_path))
    repos.close()
    assert len(list(tmp_path.glob("*.db"))) == 1


@pytest.mark.parametrize(("query", "level"), [("", 1), ("?synchronous=full", 2),
                                              ("?synchronous=normal", 1)])  # fmt: skip
def test_sqlite_synchronous_is_normal_unless_the_url_asks_for_full(
    query: str, level: int, tmp_path: Path
) -> None:
    repos = open_repositories(f"sqlite:///{tmp_path}/s.db{query}")
    try:
        with repos.db.transaction() as tx:
            assert tx.rows("PRAGMA synchronous")[0]["synchronous"] == level  # 1 NORMAL, 2 FULL
    finally:
        repos.close()


@pytest.mark.parametrize("query", ["?synchronous=off", "?journal=delete", "?synchronous"])
def test_an_unknown_sqlite_option_is_named(query: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="synchronous"):
        open_repositories(f"sqlite:///{tmp_path}/s.db{query}")


def test_unknown_store_scheme_is_named() -> None:
    with pytest.raises(InvalidInput, match="mysql://x"):
        open_repositories("mysql://x")


def test_unreachable_postgres_is_a_clear_error() -> None:
    with pytest.raises(StoreUnavailable, match="127.0.0.1:1/fleet"):
        open_postgres("postgresql://u@127.0.0.1:1/fleet?connect_timeout=1", open_timeout=0.5)


def test_a_sqlite_file_locked_by_another_writer_is_store_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    repos = SqlRepositories(SqliteDatabase(path, busy_timeout_ms=50))
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreUnavailable, match="locked"):
            repos.devices.add(NewDevice("d1", "h"), at=1.0)
        other.execute("ROLLBACK")
        assert repos.devices.add(NewDevice("d1", "h"), at=1.0).id == "d1"  # usable again
    finally:
        other.close()
        repos.close()


def test_a_file_of_the_old_store_is_refused_by_name(tmp_path: Path) -> None:
    old = sqlite3.connect(tmp_path / "old.db")  # the tables the old store/db.py made
    old.execute("CREATE TABLE devices (id TEXT PRIMARY KEY, token_hash TEXT, status TEXT)")
    old.commit()
    old.close()
    with pytest.raises(MigrationError, match="old store"):
        open_repositories(tmp_path / "old.db")


def _write(folder: Path, *names: str) -> Path:
    folder.mkdir()
    for name in names:
        (folder / name).write_text("SELECT 1;\n")
    return folder


def test_migrations_load_in_order(tmp_path: Path) -> None:
    folder = _write(tmp_path / "m", "0002_more.sql", "0001_initial.sql", "README")
    assert [(m.version, m.name) for m in load_migrations(folder)] == [(1, "initial"), (2, "more")]
    assert [m.version for m in pending(load_migrations(folder), 1)] == [2]


def test_a_gap_or_a_bad_name_or_a_newer_database_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MigrationError, match="0003 found where 0002 belongs"):
        load_migrations(_write(tmp_path / "gap", "0001_a.sql", "0003_c.sql"))
    with pytest.raises(MigrationError, match="NNNN_name.sql"):
        load_migrations(_write(tmp_path / "bad", "1_a.sql"))
    with pytest.raises(MigrationError, match="newer than this code"):
        pending(load_migrations(_write(tmp_path / "ok", "0001_a.sql")), 2)


def test_shipped_migrations_match_between_backends() -> None:
    sqlite = load_migrations("control_plane.store.sqlite.migrations")
    postgres = load_migrations("control_plane.store.postgres.migrations")
    assert [(m.version, m.name) for m in sqlite] == [(m.version, m.name) for m in postgres]


def test_broadcast_reaches_every_subscription_and_collects_topics() -> None:
    hub = Broadcast()
    first, second = hub.subscribe(), hub.subscribe()
    hub.publish({COMMANDS})
    hub.publish({DEVICES})
    assert first.wait(0.0) == {COMMANDS, DEVICES}
    assert first.wait(0.0) == frozenset()
    assert second.wait(0.0) == {COMMANDS, DEVICES}
    second.close()
    hub.publish({COMMANDS})
    assert second.wait(0.0) == frozenset()


def test_broadcast_wakes_a_waiting_thread() -> None:
    hub = Broadcast()
    sub = hub.subscribe()
    seen: list[frozenset[str]] = []
    waiter = threading.Thread(target=lambda: seen.append(sub.wait(10.0)))
    waiter.start()
    hub.publish({DEVICES})
    waiter.join(15)
    assert seen == [{DEVICES}]


def test_sqlite_reads_answer_while_another_process_holds_the_write_lock(tmp_path: Path) -> None:
    repos = open_repositories(tmp_path / "store.db")
    other = sqlite3.connect(tmp_path / "store.db", timeout=0)
    try:
        repos.devices.add(NewDevice("d1", "h"), at=1.0)
        repos.commands.add("d1", "config", {}, at=2.0)
        other.execute("BEGIN IMMEDIATE")  # e.g. the CLI in the middle of a write
        other.execute("UPDATE devices SET host_json = host_json")
        assert repos.devices.get("d1").status == "active"  # reads take no write lock
        assert [c.kind for c in repos.commands.pending("d1")] == ["config"]
        with pytest.raises(StoreUnavailable, match="store is busy"):
            repos.devices.touch("d1", at=3.0)
        other.rollback()
        repos.devices.touch("d1", at=3.0)
        assert repos.devices.get("d1").last_seen == 3.0
    finally:
        other.close()
        repos.close()
