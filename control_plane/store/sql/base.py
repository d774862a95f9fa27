"""What the shared SQL repositories need from a backend, and helpers they share."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from control_plane.errors import InvalidInput
from control_plane.store.notify import ChangeNotifier
from control_plane.store.records import DEFAULT_LIMIT, MAX_LIMIT

Row = dict[str, Any]
Params = Sequence[object]


class Tx(Protocol):
    """One transaction: statements use ``?`` placeholders whatever the backend."""

    def execute(self, sql: str, params: Params = ()) -> int:
        """Run a statement; returns the number of rows it changed."""
        ...

    def execute_many(self, sql: str, params: Sequence[Params]) -> None:
        """Run one statement once per parameter row (batched by the driver)."""
        ...

    def rows(self, sql: str, params: Params = ()) -> list[Row]: ...

    def row(self, sql: str, params: Params = ()) -> Row | None: ...

    def changed(self, topic: str) -> None:
        """Tell subscribers about ``topic`` once this transaction commits."""
        ...


class Database(Protocol):
    @property
    def notifier(self) -> ChangeNotifier: ...

    def transaction(self) -> AbstractContextManager[Tx]:
        """A read-write transaction, committed on normal exit and rolled back on error."""
        ...

    def migrate(self) -> int:
        """Apply the pending migrations (idempotent); returns the schema version."""
        ...

    def schema_version(self) -> int: ...

    def close(self) -> None: ...


def dumps(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def check_page(limit: int, offset: int) -> tuple[int, int]:
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit {limit}: expected 1..{MAX_LIMIT}")
    if offset < 0:
        raise InvalidInput(f"offset {offset}: expected 0 or more")
    return limit, offset


def where_clause(
    where: Mapping[str, object | None], extra: Sequence[tuple[str, Params]] = ()
) -> tuple[str, list[object]]:
    """`` WHERE ...`` (or ``""``) and its parameters: equality on the non-None ``where``
    fields, then the raw ``extra`` conditions (ranges, EXISTS ...) with theirs."""
    conds: list[str] = []
    params: list[object] = []
    for column, value in where.items():
        if value is not None:
            conds.append(f"{column} = ?")
            params.append(value)
    for cond, cond_params in extra:
        conds.append(cond)
        params.extend(cond_params)
    return (" WHERE " + " AND ".join(conds) if conds else ""), params


def time_range(column: str, since: float | None, until: float | None) -> list[tuple[str, Params]]:
    """``since <= column < until`` as :func:`where_clause` extras (either end may be open)."""
    out: list[tuple[str, Params]] = []
    if since is not None:
        out.append((f"{column} >= ?", [since]))
    if until is not None:
        out.append((f"{column} < ?", [until]))
    return out


def page(
    tx: Tx,
    select: str,
    where: Mapping[str, object | None],
    order_by: str,
    limit: int = DEFAULT_LIMIT,
    offset: int = 0,
    extra: Sequence[tuple[str, Params]] = (),
) -> tuple[list[Row], int | None]:
    """Rows of ``select`` filtered by equality on the non-None ``where`` fields.

    ``extra`` adds raw conditions with their parameters (ranges, EXISTS ...).
    One more row than asked tells whether another page follows.
    """
    limit, offset = check_page(limit, offset)
    conds, params = where_clause(where, extra)
    sql = select + conds + f" ORDER BY {order_by} LIMIT ? OFFSET ?"
    rows = tx.rows(sql, [*params, limit + 1, offset])
    more = len(rows) > limit
    return rows[:limit], (offset + limit if more else None)
