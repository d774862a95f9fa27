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
        path, _, query = text.removeprefix("sqlite:///").partition("?")
        return open_sqlite(Path(path), sample_keys=sample_keys, synchronous=_synchronous(query))
    if "://" in text:
        raise InvalidInput(f"store {text!r}: expected postgresql://…, sqlite:///path or a path")
    return open_sqlite(Path(text), sample_keys=sample_keys)


def _synchronous(query: str) -> str:
    """``synchronous=full`` (fsync every commit) or ``normal`` (the default) from a
    ``sqlite:///path?…`` URL's query; anything else is refused by name."""
    if not query:
        return "NORMAL"
    key, sep, value = query.partition("=")
    if key != "synchronous" or not sep or "&" in value:
        raise InvalidInput(f"sqlite store option {query!r}: expected synchronous=normal|full")
    return value.upper()
