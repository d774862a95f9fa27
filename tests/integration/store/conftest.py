"""The store suite runs on both backends: ``repos`` is SQLite (a WAL file) and PostgreSQL.

PostgreSQL is a real server started once per session (``postgres_server`` in
``tests/integration/conftest.py``, see ``tests/pg_support.py``);
every test gets a fresh database on it, migrated by the store it opens.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pg_support import PostgresServer
from store_support import OpenStore

from control_plane.store.factory import open_repositories
from control_plane.store.sql.store import SqlRepositories

BACKENDS = ["sqlite", "postgres"]


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
