"""The embedded store: SQLite in WAL mode (a file), or ``:memory:`` for unit tests."""

from control_plane.store.sqlite.backend import SqliteDatabase, open_sqlite

__all__ = ["SqliteDatabase", "open_sqlite"]
