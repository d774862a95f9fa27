"""Function aliases: ``FUNCTION:ALIAS`` → a traffic split over versions, with a revision."""

from __future__ import annotations

import builtins
from collections.abc import Mapping

from control_plane.errors import NotFound
from control_plane.store.notify import CATALOG
from control_plane.store.records import DEFAULT_LIMIT, FunctionAlias, Page
from control_plane.store.repos import RevisionConflict
from control_plane.store.sql.base import Database, Row, dumps, loads, page
from control_plane.store.sql.catalog import _version_row


class SqlFunctionAliasRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def put(
        self,
        name: str,
        model: str,
        routes: Mapping[str, int],
        telemetry_device: str,
        at: float,
        *,
        expected_revision: int | None = None,
    ) -> FunctionAlias:
        with self.db.transaction() as tx:
            for version in routes:
                _version_row(tx, model, version)  # NotFound naming the version
            old = tx.row("SELECT * FROM function_aliases WHERE name = ?", [name])
            revision = int(old["revision"]) if old is not None else 0
            if expected_revision is not None and revision != expected_revision:
                raise RevisionConflict(
                    f"function alias {name!r} is at revision {revision} "
                    f"(expected {expected_revision}); read it again"
                )
            values = [model, dumps(dict(routes)), telemetry_device, at]
            if old is None:
                tx.execute(
                    "INSERT INTO function_aliases (model, routes_json, telemetry_device,"
                    " updated_at, name, revision, created_at) VALUES (?, ?, ?, ?, ?, 1, ?)",
                    [*values, name, at],
                )
            elif not tx.execute(
                "UPDATE function_aliases SET model = ?, routes_json = ?, telemetry_device = ?,"
                " updated_at = ?, revision = revision + 1 WHERE name = ? AND revision = ?",
                [*values, name, revision],
            ):
                raise RevisionConflict(f"function alias {name!r} moved meanwhile; read it again")
            tx.changed(CATALOG)
            row = tx.row("SELECT * FROM function_aliases WHERE name = ?", [name])
            assert row is not None
            return _alias(row)

    def get(self, name: str) -> FunctionAlias:
        found = self.find(name)
        if found is None:
            raise NotFound(f"function alias {name!r} does not exist")
        return found

    def find(self, name: str) -> FunctionAlias | None:
        with self.db.transaction() as tx:
            row = tx.row("SELECT * FROM function_aliases WHERE name = ?", [name])
        return _alias(row) if row is not None else None

    def list(
        self, *, model: str | None = None, limit: int = DEFAULT_LIMIT, offset: int = 0
    ) -> Page[FunctionAlias]:
        with self.db.transaction() as tx:
            rows, more = page(
                tx, "SELECT * FROM function_aliases", {"model": model}, "name", limit, offset
            )
            return Page([_alias(r) for r in rows], more)


def _alias(row: Row) -> FunctionAlias:
    routes: builtins.dict[str, int] = {str(k): int(v) for k, v in loads(row["routes_json"]).items()}
    return FunctionAlias(
        name=row["name"],
        model=row["model"],
        routes=dict(sorted(routes.items(), key=lambda item: (-item[1], item[0]))),
        telemetry_device=row["telemetry_device"],
        revision=int(row["revision"]),
        created_at=float(row["created_at"]),
        updated_at=float(row["updated_at"]),
    )
