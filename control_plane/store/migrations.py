"""Versioned migrations: numbered SQL files per backend, applied once, recorded in a table.

``<backend>/migrations/NNNN_name.sql`` holds one step; ``schema_migrations``
records (version, name, applied_at) of every applied step, and the schema
version is the highest recorded. Applying is idempotent; each backend takes a
lock first so that two processes starting at once apply a step once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

from control_plane.errors import ControlPlaneError

_FILE = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")

CREATE_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
)


class MigrationError(ControlPlaneError):
    """A migration file is misnamed or misnumbered, or the database is newer than the code."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations(source: str | Traversable) -> list[Migration]:
    """The migrations in a package (dotted name) or directory, numbered 1, 2, 3 ... no gaps."""
    folder = resources.files(source) if isinstance(source, str) else source
    found = []
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _FILE.fullmatch(entry.name)
        if match is None:
            raise MigrationError(f"migration file {entry.name!r}: expected NNNN_name.sql")
        found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise MigrationError(
                f"{folder}: migration {migration.version:04d} found where {expected:04d} belongs"
            )
    return found


def pending(migrations: list[Migration], current: int) -> list[Migration]:
    latest = migrations[-1].version if migrations else 0
    if current > latest:
        raise MigrationError(
            f"the database is at schema version {current}, newer than this code ({latest}):"
            " upgrade fleetcast"
        )
    return [m for m in migrations if m.version > current]
