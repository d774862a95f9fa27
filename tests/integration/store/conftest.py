"""The store suite runs on both backends: ``repos`` is SQLite (a WAL file) and PostgreSQL.

PostgreSQL is a real server started once per session (see ``tests/pg_support.py``);
every test gets a fresh database on it, migrated by the store it opens.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from pg_support import INSTALL_HINT, PostgresServer, find_pg_bin
from store_support import OpenStore

from control_plane.store.factory import open_repositories
from control_plane.store.sql.store import SqlRepositories

logger = logging.getLogger(__name__)

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    bin_dir = find_pg_bin()
    if bin_dir is None:  # never a skip, in CI or not: `make test` installs it
        pytest.fail(INSTALL_HINT)
    server = PostgresServer(bin_dir).start()
    logger.info("PostgreSQL started in %.2f s", server.startup_seconds)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=BACKENDS)
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenStore]:
    """Opens store instances on one database of the backend: the same data, new connections."""
    if request.param == "postgres":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        url = server.create_database()
    else:
        url = str(tmp_path / "store.db")
    opened: list[SqlRepositories] = []

    def open_one() -> SqlRepositories:
        store = open_repositories(url)
        opened.append(store)
        return store

    yield open_one
    for store in reversed(opened):
        store.close()


@pytest.fixture()
def repos(open_store: OpenStore) -> SqlRepositories:
    return open_store()
