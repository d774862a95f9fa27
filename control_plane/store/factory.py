"""Open the repositories named by a store URL: a SQLite path, ``:memory:`` or ``postgresql://``."""

from __future__ import annotations

from pathlib import Path

from control_plane.crypto import SampleKeyring
from control_plane.errors import InvalidInput
from control_plane.store.sql.store import SqlRepositories


def open_repositories(
    url: str | Path, *, sample_keys: SampleKeyring | None = None
) -> SqlRepositories:
    """``postgresql://…`` (or ``postgres://…``), ``sqlite:///path``, a file path or ``:memory:``.

    ``sample_keys`` seal captured samples (None: a random key held in memory only).
    """
    text = str(url)
    if text.startswith(("postgresql://", "postgres://")):
        from control_plane.store.postgres import open_postgres  # psycopg only when asked for

        return open_postgres(text, sample_keys=sample_keys)
    from control_plane.store.sqlite import open_sqlite

    if text in (":memory:", "sqlite://", "sqlite:///:memory:"):
        return open_sqlite(None, sample_keys=sample_keys)
    if text.startswith("sqlite:///"):
        return open_sqlite(Path(text.removeprefix("sqlite:///")), sample_keys=sample_keys)
    if "://" in text:
        raise InvalidInput(f"store {text!r}: expected postgresql://…, sqlite:///path or a path")
    return open_sqlite(Path(text), sample_keys=sample_keys)
