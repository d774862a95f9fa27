"""The change notifier, concurrent writers and migrations on both backends.

A write through one store instance (another connection, or another process)
wakes a subscription on a second instance: SQLite through ``PRAGMA
data_version``, PostgreSQL through LISTEN/NOTIFY.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from pg_support import PostgresServer
from store_support import OpenStore

from control_plane.errors import Conflict
from control_plane.store.factory import open_repositories
from control_plane.store.notify import ANY, COMMANDS, DEVICES
from control_plane.store.records import ModelCard, NewDevice, NewUpload
from control_plane.store.sql.store import SqlRepositories

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
WAIT = 10.0  # an upper bound only: a subscription returns as soon as news arrives


def _expected(repos: SqlRepositories, topic: str) -> frozenset[str]:
    """SQLite cannot tell which table another connection wrote; PostgreSQL can."""
    return frozenset({ANY}) if _backend(repos) == "sqlite" else frozenset({topic})


def _backend(repos: SqlRepositories) -> str:
    return "sqlite" if type(repos.db).__name__ == "SqliteDatabase" else "postgres"


def _wait_in_thread(repos: SqlRepositories) -> tuple[threading.Thread, list[frozenset[str]]]:
    sub = repos.notifier.subscribe()
    seen: list[frozenset[str]] = []
    thread = threading.Thread(target=lambda: seen.append(sub.wait(WAIT)))
    thread.start()
    return thread, seen


def test_own_write_wakes_own_subscription_with_its_topic(repos: SqlRepositories) -> None:
    repos.devices.add(NewDevice("d1", "h"), at=1.0)
    sub = repos.notifier.subscribe()
    repos.commands.add("d1", "deploy", {}, at=2.0)
    assert sub.wait(WAIT) == {COMMANDS}
    repos.devices.revoke("d1", at=3.0)
    assert sub.wait(WAIT) == {DEVICES}


def test_command_through_one_instance_wakes_a_waiter_on_another(open_store: OpenStore) -> None:
    writer, watcher = open_store(), open_store()
    writer.devices.add(NewDevice("d1", "h"), at=1.0)
    watcher.notifier.subscribe().close()  # drain the enrollment's news before waiting
    thread, seen = _wait_in_thread(watcher)
    writer.commands.add("d1", "deploy", {"sha256": "aa"}, at=2.0)
    thread.join(WAIT + 5)
    assert seen == [_expected(watcher, COMMANDS)]
    assert [c.execution_version for c in watcher.commands.pending("d1")] == [1]


def test_revocation_through_one_instance_wakes_another(open_store: OpenStore) -> None:
    writer, watcher = open_store(), open_store()
    writer.devices.add(NewDevice("d1", "h"), at=1.0)
    thread, seen = _wait_in_thread(watcher)
    writer.devices.revoke("d1", at=2.0)
    thread.join(WAIT + 5)
    assert seen and seen[0] >= _expected(watcher, DEVICES)
    assert watcher.devices.revoked_ids() == ["d1"]


def test_command_written_by_another_process_wakes_a_waiter(
    open_store: OpenStore, tmp_path: Path
) -> None:
    watcher = open_store()
    watcher.devices.add(NewDevice("d1", "h"), at=1.0)
    url = _url_of(watcher, tmp_path)
    sub = watcher.notifier.subscribe()
    sub.wait(0.2)  # own enrollment news, if any arrives late
    script = (
        "import sys; from control_plane.store.factory import open_repositories;"
        "s = open_repositories(sys.argv[1]); s.commands.add('d1', 'config', {}, 2.0); s.close()"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", script, url], check=True, env=env, timeout=60)
    assert sub.wait(WAIT) == _expected(watcher, COMMANDS)
    assert [c.kind for c in watcher.commands.pending("d1")] == ["config"]


def _url_of(repos: SqlRepositories, tmp_path: Path) -> str:
    db = repos.db
    if _backend(repos) == "sqlite":
        return str(db.path)  # type: ignore[attr-defined]
    return str(db.conninfo)  # type: ignore[attr-defined]


def test_reads_and_failed_writes_announce_nothing(open_store: OpenStore) -> None:
    writer, watcher = open_store(), open_store()
    writer.devices.add(NewDevice("d1", "h"), at=1.0)
    writer.enrollment_tokens.add("tok", None, created_at=1.0, expires_at=None)
    own, other = writer.notifier.subscribe(), watcher.notifier.subscribe()
    writer.devices.list()
    writer.commands.pending()
    with pytest.raises(Conflict):  # the token update is rolled back with the device insert
        writer.devices.enroll(NewDevice("d1", "x"), "tok", at=2.0)
    assert own.wait(0.3) == frozenset()
    assert other.wait(0.3) == frozenset()


def test_concurrent_writers_get_distinct_consecutive_execution_versions(
    open_store: OpenStore,
) -> None:
    stores = [open_store(), open_store()]
    stores[0].devices.add(NewDevice("d1", "h"), at=1.0)

    def send(store: SqlRepositories) -> None:
        for _ in range(10):
            store.commands.add("d1", "config", {}, at=2.0)

    threads = [threading.Thread(target=send, args=(stores[i % 2],)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    versions = sorted(c.execution_version for c in stores[1].commands.pending("d1"))
    assert versions == list(range(1, 61))


def test_each_compile_job_is_claimed_once_by_competing_workers(open_store: OpenStore) -> None:
    stores = [open_store(), open_store()]
    stores[0].models.add("digits", "", "ml", at=1.0)
    stores[0].versions.add("digits", "1", ModelCard("x", "y", "ml"), None, at=1.0)
    jobs = {stores[0].compile_jobs.add("digits", "1", ["p"], "op", at=1.0).id for _ in range(12)}
    claimed: list[str] = []
    lock = threading.Lock()

    def work(store: SqlRepositories, name: str) -> None:
        while True:
            job = store.compile_jobs.claim(name, at=2.0)
            if job is None:
                if not store.compile_jobs.list(state="queued").items:
                    return
                continue
            with lock:
                claimed.append(job.id)

    threads = [threading.Thread(target=work, args=(stores[i % 2], f"w{i}")) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(claimed) == sorted(jobs)


def test_migrate_is_idempotent_and_records_the_version(open_store: OpenStore) -> None:
    first = open_store()
    assert first.schema_version() == 10
    assert first.db.migrate() == 10
    second = open_store()  # migrates again on open: nothing to do
    assert second.schema_version() == 10
    with second.db.transaction() as tx:
        rows = tx.rows("SELECT version, name FROM schema_migrations ORDER BY version")
    assert rows == [
        {"version": 1, "name": "initial"},
        {"version": 2, "name": "device_activity"},
        {"version": 3, "name": "rollouts"},
        {"version": 4, "name": "monitoring"},
        {"version": 5, "name": "alerts"},
        {"version": 6, "name": "explanations"},
        {"version": 7, "name": "function_aliases"},
        {"version": 8, "name": "alert_rules"},
        {"version": 9, "name": "retention"},
        {"version": 10, "name": "ingest_lz4"},
    ]


def test_postgres_compresses_large_uploads_with_lz4(postgres_server: PostgresServer) -> None:
    """Migration 0008: raw uploads and window histograms over the TOAST threshold (2 kB) are
    compressed with lz4 when the server has it, and read back unchanged."""
    repos = open_repositories(postgres_server.create_database())
    try:
        body = '{"counts":[' + ",".join(str(i % 7) for i in range(3000)) + "]}"
        assert repos.uploads.add("d1", [NewUpload(1, "status", body)], "grpc", at=1.0) == [1]
        assert repos.uploads.list(device_id="d1").items[0].body_json == body
        with repos.db.transaction() as tx:
            lz4 = tx.row(
                "SELECT 'lz4' = ANY (enumvals) AS ok FROM pg_settings"
                " WHERE name = 'default_toast_compression'"
            )
            stored = tx.row("SELECT pg_column_compression(body_json) AS method FROM uploads")
            columns = tx.rows(
                "SELECT attrelid::regclass::text AS t, attcompression AS c FROM pg_attribute"
                " WHERE attname IN ('body_json', 'histograms_json') AND attrelid IN"
                " ('uploads'::regclass, 'telemetry_windows'::regclass,"
                " 'telemetry_rollups'::regclass) ORDER BY 1"
            )
        assert lz4 is not None and stored is not None
        expected = "lz4" if lz4["ok"] else "pglz"
        assert stored["method"] == expected
        assert [(c["t"], c["c"]) for c in columns] == [
            (t, "l" if lz4["ok"] else "")
            for t in ("telemetry_rollups", "telemetry_windows", "uploads")
        ]
    finally:
        repos.close()


def test_two_instances_migrating_a_fresh_database_at_once(open_store: OpenStore) -> None:
    results: list[int] = []
    errors: list[BaseException] = []

    def open_and_read() -> None:
        try:
            results.append(open_store().schema_version())
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_and_read) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert (errors, results) == ([], [10, 10, 10])


def test_postgres_listener_reconnects_and_announces_a_possible_gap(
    postgres_server: PostgresServer,
) -> None:
    repos = open_repositories(postgres_server.create_database())
    try:
        repos.devices.add(NewDevice("d1", "h"), at=1.0)
        sub = repos.notifier.subscribe()
        sub.wait(0.2)  # the enrollment's own news
        with repos.db.transaction() as tx:
            killed = tx.rows(
                "SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity"
                " WHERE datname = current_database() AND query LIKE 'LISTEN %'"
            )
        assert [row["ok"] for row in killed] == [True]
        assert sub.wait(WAIT) == {ANY}  # notifications may have been lost meanwhile
        repos.commands.add("d1", "deploy", {}, at=2.0)
        assert sub.wait(WAIT) == {COMMANDS}
    finally:
        repos.close()
