"""What retention of raw uploads costs: the pruned-range trigger on the ingest INSERT, and
the prune itself, on SQLite and PostgreSQL.

The ``uploads_not_pruned`` trigger (migration 0008) probes ``upload_pruned`` for every row
the ingest INSERT proposes. Measured side by side: three stores of one backend, the same
uploads (1,000 devices, status reports of ~300 bytes, 64 uploads a transaction as the
group commit makes them): one as migrated, one with the trigger dropped (no check), one
with the trigger dropped and the check folded into the INSERT as an anti-join; all start
with 1,000 devices x 3 pruned ranges, so the probe finds rows to look at. New uploads, then
the same again (resends: every row a duplicate). Rounds alternate between the two stores
and the median is reported; a seq inside a pruned range is checked to be skipped by both
checks. Then the prune: every upload received before the cutoff deleted
and its seq merged into the ranges, 5,000 rows a transaction.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks.common import markdown_table, tool_versions, write_results

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
DEVICES = 1000
PER_DEVICE = 20  # uploads per device per round
GROUP = 64  # uploads a transaction
ROUNDS = 7


def _batches(round_no: int) -> list[list[Any]]:
    from control_plane.store.records import NewUpload, UploadBatch

    batches = []
    for k in range(PER_DEVICE):
        seq = 1000 + round_no * PER_DEVICE + k  # above every pruned range
        for d in range(DEVICES):
            body = {"kind": "status", "device_id": f"dev-{d:04d}", "sequence": seq,
                    "at": 1.0, "event": "health", "detail": "x" * 200}  # fmt: skip
            upload = NewUpload(seq, "status", json.dumps(body))
            batches.append(UploadBatch(f"dev-{d:04d}", [upload], "grpc", {}))
    return [batches[i : i + GROUP] for i in range(0, len(batches), GROUP)]


MODES = ("none", "trigger", "folded")
"""none: the trigger dropped, no check (what ingest cost before); trigger: as migrated;
folded: the trigger dropped, the check folded into the INSERT as an anti-join (the
alternative, measured here only: it would rewrite ``SqlUploadRepo.add_group``'s statement)."""


def _folded_add(repos: Any, group: list[Any], at: float) -> int:
    """``add_group``'s INSERT with the pruned-range check in its SELECT (benchmark only)."""
    postgres = repos.db.__class__.__name__.startswith("Postgres")
    d, s = ("v.d", "v.s::bigint") if postgres else ("v.column1", "v.column2")
    cols = "v.d, v.s::bigint, v.k, v.b, v.r::double precision, v.t" if postgres else "v.*"
    alias = " AS v(d, s, k, b, r, t)" if postgres else " AS v"
    params: list[object] = []
    for b in group:
        for item in b.items:
            params += [b.device_id, item.seq, item.kind, item.body_json, at, b.transport]
    values = ", ".join("(?, ?, ?, ?, ?, ?)" for _ in range(len(params) // 6))
    with repos.db.transaction() as tx:
        return len(tx.rows(
            "INSERT INTO uploads (device_id, seq, kind, body_json, received_at, transport)"
            f" SELECT {cols} FROM (VALUES {values}){alias} WHERE NOT EXISTS (SELECT 1 FROM"
            f" upload_pruned p WHERE p.device_id = {d} AND {s} BETWEEN p.lo AND p.hi)"
            " ON CONFLICT (device_id, seq) DO NOTHING RETURNING device_id, seq",
            params,
        ))  # fmt: skip


def _store(url: str, trigger: bool) -> Any:
    from control_plane.store.factory import open_repositories

    repos = open_repositories(url)
    with repos.db.transaction() as tx:
        tx.execute_many(
            "INSERT INTO upload_pruned (device_id, lo, hi) VALUES (?, ?, ?)",
            [[f"dev-{d:04d}", lo, lo + 99] for d in range(DEVICES) for lo in (1, 201, 401)],
        )
        if not trigger:
            on = " ON uploads" if "://" in url else ""
            tx.execute(f"DROP TRIGGER uploads_not_pruned{on}")
    return repos


def _rate(repos: Any, mode: str, groups: list[list[Any]], at: float) -> tuple[float, int]:
    started = time.perf_counter()
    new = 0
    for group in groups:
        if mode == "folded":
            new += _folded_add(repos, group, at)
        else:
            new += sum(len(s) for s in repos.uploads.add_group(group, at))
    return len(groups) * GROUP / (time.perf_counter() - started), new


def _measure(backend: str, make_url: Callable[[], str]) -> list[dict[str, Any]]:
    stores = {m: _store(make_url(), m == "trigger") for m in MODES}
    rates: dict[str, dict[str, list[float]]] = {m: {"new": [], "resend": []} for m in MODES}
    try:
        for round_no in range(ROUNDS):
            groups = _batches(round_no)
            for mode in MODES if round_no % 2 == 0 else MODES[::-1]:
                rate, new = _rate(stores[mode], mode, groups, 1000.0 + round_no)
                assert new == DEVICES * PER_DEVICE, new
                rates[mode]["new"].append(rate)
                rate, new = _rate(stores[mode], mode, groups, 1000.0 + round_no)
                assert new == 0, new  # resends: all duplicates
                rates[mode]["resend"].append(rate)
        # a seq inside a pruned range (every device has [1, 100]): skipped by both checks
        check = [[replace(b, items=[replace(b.items[0], seq=50)]) for b in _batches(0)[0]]]
        for mode in ("trigger", "folded"):
            assert _rate(stores[mode], mode, check, 1.0)[1] == 0, mode
        repos = stores["trigger"]
        started = time.perf_counter()
        pruned = 0
        while n := repos.retention.prune_uploads(1e9, 5000):
            pruned += n
        prune_s = time.perf_counter() - started
        assert pruned == ROUNDS * DEVICES * PER_DEVICE, pruned
        ranges = sum(len(repos.retention.pruned_uploads(f"dev-{d:04d}")) for d in range(DEVICES))
    finally:
        for store in stores.values():
            store.close()
    rows = []
    for mode in MODES:
        rows.append(
            {
                "backend": backend,
                "check": mode,
                "new_uploads_per_s": round(statistics.median(rates[mode]["new"])),
                "resent_uploads_per_s": round(statistics.median(rates[mode]["resend"])),
            }
        )
    rows[1]["pruned_per_s"] = round(pruned / prune_s)
    rows[1]["ranges_after_prune"] = ranges
    logger.info("%s", rows)
    return rows


CHECKS = {
    "none": "none (trigger dropped)",
    "trigger": "trigger (migration 0008, what runs)",
    "folded": "anti-join in the INSERT (alternative)",
}


def run(results_dir: Path) -> str:
    sys.path.insert(0, str(ROOT / "tests"))
    from pg_support import INSTALL_HINT, PostgresServer, find_pg_bin

    work = Path(tempfile.mkdtemp(prefix="fleetcast-bench-retention-"))
    names = iter(range(100))
    rows = _measure("sqlite", lambda: str(work / f"store-{next(names)}.db"))
    bin_dir = find_pg_bin()
    if bin_dir is None:
        logger.warning("%s; PostgreSQL left out", INSTALL_HINT)
    else:
        pg = PostgresServer(bin_dir).start()
        try:
            rows += _measure("postgresql", pg.create_database)
        finally:
            pg.stop()
    load = os.getloadavg()[0]
    table = markdown_table(
        ["backend", "pruned-range check", "new uploads/s", "µs per new upload",
         "resent uploads/s (duplicates)",
         "pruned uploads/s", "ranges after the prune (1,000 devices)"],
        [[r["backend"], CHECKS[r["check"]], r["new_uploads_per_s"],
          f"{1e6 / r['new_uploads_per_s']:.1f}", r["resent_uploads_per_s"],
          r.get("pruned_per_s", ""), r.get("ranges_after_prune", "")]
         for r in rows],
    )  # fmt: skip
    markdown = "\n\n".join(
        [
            "## Retention of raw uploads: the trigger's cost on ingest, and the prune",
            f"{DEVICES:,} devices x {PER_DEVICE} status uploads a round ({GROUP} uploads a"
            " transaction, `SqlUploadRepo.add_group` or the same INSERT with the check folded in,"
            " the store side of ingest without the"
            " decoding), median of"
            f" {ROUNDS} alternating rounds; every store starts with 3 pruned ranges a device."
            " The prune deletes every upload and merges its seq into the device's ranges"
            " (5,000 rows a transaction); the seqs were contiguous, so one range a device"
            " is left beside the 3 it had. For scale: the whole ingest path (decoding and"
            " validation included) takes ~165 µs a window (`ingest.md`).",
            table,
            f"Host load average when the run ended: {load:.1f} on {os.cpu_count()} cores"
            " (the machine is shared: rates fall with the load).",
        ]
    )
    write_results(
        results_dir,
        "retention",
        markdown,
        {"rows": rows, "load_average": load, "tools": tool_versions(["psycopg"])},
    )
    return markdown
