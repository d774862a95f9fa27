"""The tables of ``fleetcast monitor``: the routes' JSON in, (columns, rows of text) out.

Pure but for :func:`print_table`. Figures keep 4 decimals (``fmt``) so an operator
reads the same number the route answered; times are UTC.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Rows = tuple[list[str], list[list[str]]]
SHOWN_FEATURES = 6  # drifted feature names listed in a cell; the rest counted


def fmt(value: Any, digits: int = 4) -> str:
    """A cell: ``-`` for None, 4 decimals for a float, ``yes``/``no`` for a bool."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def when(value: float | None) -> str:
    if value is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(value))


def features_cell(drifted: Sequence[str], total: int | None = None) -> str:
    """``3/64: px_1, px_2, px_9`` (names past :data:`SHOWN_FEATURES` counted, not listed)."""
    head = f"{len(drifted)}" if total is None else f"{len(drifted)}/{total}"
    if not drifted:
        return head
    names = ", ".join(drifted[:SHOWN_FEATURES])
    more = len(drifted) - SHOWN_FEATURES
    return f"{head}: {names}" + (f", … +{more}" if more > 0 else "")


def package_cell(item: Mapping[str, Any]) -> str:
    sha = item.get("package_sha256")
    return str(item.get("package_id") or (sha[:12] if sha else "-"))


def drift_rows(reports: Iterable[Mapping[str, Any]]) -> Rows:
    columns = ["group", "package", "profile", "windows", "rows", "status", "drifted share",
               "drifted features", "attribution drift"]  # fmt: skip
    rows = [
        [
            str(r["group"]),
            package_cell(r),
            fmt(r.get("profile_id")),
            fmt(r["windows"]),
            fmt(r["rows"]),
            str(r["status"]),
            fmt(r.get("drifted_share")),
            features_cell(r.get("drifted", []), len(r.get("features", []))),
            fmt((r.get("attribution_drift") or {}).get("status")),
        ]  # fmt: skip
        for r in reports
    ]
    return columns, rows


def sliding_rows(steps: Iterable[Mapping[str, Any]]) -> Rows:
    columns = ["step start", "steps merged", "status", "drifted share", "drifted features"]
    rows = [
        [
            when(s["step_start"]),
            fmt(s["steps_merged"]),
            str(s["status"]),
            fmt(s.get("drifted_share")),
            features_cell(s.get("drifted", [])),
        ]  # fmt: skip
        for s in steps
    ]
    return columns, rows


def feature_rows(features: Iterable[Mapping[str, Any]]) -> Rows:
    """Each feature's figures, largest PSI first."""
    columns = ["feature", "status", "severity", "psi", "js distance", "ks d", "test", "p adjusted"]
    ordered = sorted(features, key=lambda f: -(f.get("psi") or 0.0))
    rows = [
        [
            str(f["key"]),
            str(f["status"]),
            str(f["severity"]),
            fmt(f.get("psi")),
            fmt(f.get("js_distance")),
            fmt(f.get("ks_d")),
            str(f["test"]),
            fmt(f.get("p_adjusted")),
        ]  # fmt: skip
        for f in ordered
    ]
    return columns, rows


def unevaluated_rows(items: Iterable[Mapping[str, Any]]) -> Rows:
    columns = ["group", "package", "windows", "reason"]
    rows = [[str(u["group"]), package_cell(u), fmt(u["windows"]), str(u["reason"])] for u in items]
    return columns, rows


def accuracy_rows(
    measured: Iterable[Mapping[str, Any]],
    estimated: Iterable[Mapping[str, Any]] | None,
    task: str,
) -> Rows:
    """Per (group, bucket): the measured figures beside the estimated ones (classification);
    a bucket with captures but no labels has only the estimate, and the reverse."""
    by_key: dict[tuple[str, float], dict[str, Mapping[str, Any]]] = {}
    for b in measured:
        by_key.setdefault((str(b.get("group", "all")), b["bucket_start"]), {})["m"] = b
    for b in estimated or ():
        by_key.setdefault((str(b.get("group", "all")), b["bucket_start"]), {})["e"] = b
    if task != "classification":
        columns = ["group", "bucket start", "measured n", "measured MAE"]
        rows = [
            [group, when(start), fmt(cell["m"].get("count")), fmt(cell["m"].get("mae"))]
            for (group, start), cell in sorted(by_key.items())
            if "m" in cell
        ]
        return columns, rows
    columns = ["group", "bucket start", "measured n", "measured accuracy", "measured F1 macro",
               "estimated n", "estimated accuracy", "estimated ±"]  # fmt: skip
    rows = []
    for (group, start), cell in sorted(by_key.items()):
        m, e = cell.get("m", {}), cell.get("e", {})
        rows.append(
            [
                group,
                when(start),
                fmt(m.get("count", 0)),
                fmt(m.get("accuracy")),
                fmt(m.get("f1_macro")),
                fmt(e.get("count", 0)),
                fmt(e.get("accuracy")),
                fmt(e.get("standard_error")),
            ]  # fmt: skip
        )
    return columns, rows


def group_rows(groups: Iterable[Mapping[str, Any]], task: str) -> Rows:
    """The per-group summaries of ``GET /accuracy?group_by=``."""
    score = (
        ("measured F1 macro", "f1_macro") if task == "classification" else ("measured MAE", "mae")
    )
    columns = ["group", "captures", "labelled", "measured accuracy", score[0], "estimated accuracy"]
    rows = [
        [
            str(g.get("group")),
            fmt(g.get("captures")),
            fmt(g.get("labelled")),
            fmt(g.get("accuracy")),
            fmt(g.get(score[1])),
            fmt(g.get("estimated_accuracy")),
        ]  # fmt: skip
        for g in groups
    ]
    return columns, rows


def print_table(title: str, table: Rows) -> None:
    """A rich table with its title; ``TITLE: none`` when it has no rows."""
    import click

    columns, rows = table
    if not rows:
        click.echo(f"{title}: none")
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    out = Table(title=title, title_justify="left")
    for column in columns:  # fold: a narrow terminal wraps an id, never cuts it
        out.add_column(column, overflow="fold")
    for row in rows:
        out.add_row(*(Text(cell) for cell in row))  # Text: a [bracket] is not markup
    Console().print(out)
