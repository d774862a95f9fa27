"""Telemetry ingest into SQLite and PostgreSQL, and drift evaluation over a 1,000-device fleet.

Windows are real ones: a package manifest whose reference statistics cut 20 input
features into 20 equal-mass bins (plus the classifier's two output features), a
:class:`~edge_agent.core.telemetry.ModelTelemetry` recording 1,000 rows, closed into a
window (histograms, KLL latency sketch); each device's windows are that window re-stamped
with the device id, sequence number and time, as JSON (what the agent uploads).

Ingest goes through :meth:`IngestService.ingest` — the path both transports take: decode and
validate each window once (pydantic), then store the raw upload and the indexed window in one
transaction per upload. Uploads of 1 window (an agent flushing each window as it closes) and
of 100 (the agent's ``MAX_BATCH_MESSAGES``, an agent catching up after being offline). Then
every upload is delivered a second time (a resend after a lost ack): acked, stored once —
the benchmark checks the row counts.

PostgreSQL runs as the tests run it (fsync, synchronous_commit off: a scratch server) and
once more with its durable defaults (fsync and synchronous_commit on: an ack means the
commit is on disk); the server's own CPU time per window is read from ``/proc``. The path
before the lz4 / chunked-INSERT branch is measured beside the current one in the same run
(1 window per upload, 32 senders): one multi-row INSERT per group (over psycopg's 50-parameter
statement cache), pglz TOAST compression, the lingering writer woken at every queued upload.

Drift: :meth:`MonitoringService.drift` over the store (read 1,000 devices' windows, merge
per package, evaluate 22 features) — the control plane's own cost, not the core's alone
(``bench_drift.py`` has that).
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import markdown_table, tool_versions, write_results

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
FEATURES = 20
BINS = 20
DEVICES = 1000
WINDOWS = 20_000  # per configuration: 1,000 devices x 20 windows
SENDERS = 32  # concurrent callers: the gRPC server keeps 128 of its 512 workers for uploads
# (windows per upload, concurrent senders, group commit: most uploads per transaction)
CONFIGS = ((1, 1, 64), (1, SENDERS, 1), (1, SENDERS, 64), (100, 1, 64))
# SQLite with synchronous=FULL (an fsync per commit: acked windows survive a power loss)
FULL_CONFIGS = ((1, 1, 64), (1, SENDERS, 1), (1, SENDERS, 64))
# PostgreSQL with its durable defaults (fsync, synchronous_commit on)
DURABLE_CONFIGS = ((1, SENDERS, 64),)
TARGET = 5000.0  # windows/s (issue #11)
PREVIOUS_CHUNK = 500  # rows per uploads INSERT before the lz4 / chunked-INSERT branch
COMPARE_ROUNDS = 3  # previous and current path alternated, each on a fresh database: medians
DRIFT_RUNS = 5
BEFORE = (
    "Before the group commit and the captures-only redaction (re-measured at commit 0739d12,"
    " same machine, load average 1.5, same benchmark, one sender): SQLite 4,401/s (1 window"
    " per upload) and 8,110/s (100); PostgreSQL 1,919/s and 5,817/s."
)


def _manifest() -> Any:
    from control_plane.core.stats import numeric_stats
    from edge_agent.core.manifest import TensorStats
    from tests.unit.control_plane.monitoring_support import monitored_manifest

    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 1.0, (5000, FEATURES)).astype(np.float32)
    logits = x[:, :3] * 2.0
    scores = (np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)).astype(np.float32)
    manifest = monitored_manifest(x, scores)
    features = tuple(numeric_stats(f"x[{i}]", x[:, i], bins=BINS) for i in range(FEATURES))
    tensor = manifest.reference.inputs[0]
    inputs = (TensorStats(tensor=tensor.tensor, feature_axis="element", features=features),)
    reference = manifest.reference.model_copy(update={"inputs": inputs})
    return manifest.model_copy(update={"reference": reference})


def _template(manifest: Any) -> dict[str, Any]:
    from edge_agent.core.telemetry import ModelTelemetry

    rng = np.random.default_rng(1)
    telemetry = ModelTelemetry(manifest, clock=lambda: 1000.0, seed=0)
    x = rng.normal(0.1, 1.0, (1000, FEATURES)).astype(np.float32)
    e = np.exp(x[:, :3] * 2.0)
    scores = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
    for i in range(0, 1000, 10):
        telemetry.record({"x": x[i : i + 10]}, {"probs": scores[i : i + 10]}, 0.002)
    window: dict[str, Any] = telemetry.close_window("template", 1)
    window["captures"] = []
    counts = [len(f["counts"]) for f in window["inputs"][0]["features"]]
    assert counts == [BINS] * FEATURES, counts
    return window


def _uploads(template: dict[str, Any], start: float) -> dict[str, list[tuple[int, str, str]]]:
    """Per device, its windows as upload items (seq, kind, JSON), 60 s apart."""
    per_device = WINDOWS // DEVICES
    out: dict[str, list[tuple[int, str, str]]] = {}
    for d in range(DEVICES):
        device = f"dev-{d:04d}"
        items = []
        for seq in range(1, per_device + 1):
            at = start + 60.0 * seq
            body = {**template, "device_id": device, "sequence": seq,
                    "started_at": at - 60.0, "ended_at": at}  # fmt: skip
            items.append((seq, "telemetry_window", json.dumps(body)))
        out[device] = items
    return out


def _previous_group_commit(group: Any) -> Any:
    """The group commit as it was before: the lingering writer woken at every upload queued
    (its one-shot wake-ups were Events then, not reproduced: ~2 us a window)."""
    from control_plane.services.ingest import GroupCommit

    class Previous(GroupCommit):
        def _wake_writer(self) -> None:
            if self._lingering:
                self._cv.notify()

    return Previous(group.write, group.max_batch, group.linger_s)


def _pglz(url: str) -> None:
    """Back to PostgreSQL's default TOAST compression (before migration 0008)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for table, column in (("uploads", "body_json"), ("telemetry_windows", "histograms_json"),
                              ("telemetry_rollups", "histograms_json")):  # fmt: skip
            conn.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET COMPRESSION pglz")


def _open(url: str, manifest: Any) -> Any:
    from control_plane.store.factory import open_repositories
    from control_plane.store.records import NewDevice, Package

    repos = open_repositories(url)
    repos.packages.put(
        Package("f" * 64, manifest.package_id, "digits", "1", manifest.profile.id, 1, 1, "/p",
                manifest.model_dump(mode="json"), 1.0)
    )  # fmt: skip
    for d in range(DEVICES):
        repos.devices.add(NewDevice(f"dev-{d:04d}", "h"), at=1.0)
    return repos


def _ingest(
    repos: Any,
    uploads: dict[str, list[tuple[int, str, str]]],
    batch: int,
    senders: int = 1,
    group: int = 64,
    previous: bool = False,
    server: Any = None,
) -> tuple[float, float, float, float | None]:
    """Every device's windows in uploads of ``batch``, round-robin over devices, from
    ``senders`` threads (as a transport's worker threads call ``ingest`` concurrently; each
    thread serves its own devices) with a group commit of up to ``group`` uploads: (wall
    seconds, CPU seconds of this process, uploads per transaction, CPU seconds of the
    PostgreSQL ``server`` or None). ``previous``: the path before the chunked INSERT."""
    from control_plane.quotas import QuotaLimits
    from control_plane.services.devices import DeviceService
    from control_plane.services.ingest import IngestService

    unlimited = QuotaLimits(1e12, 1e12, 1e12, 1e12)
    ingest = IngestService(repos, DeviceService(repos), quota=unlimited, group_commit=group)
    if previous:
        ingest.group = _previous_group_commit(ingest.group)
        repos.uploads.chunk = PREVIOUS_CHUNK
        repos.uploads.window_rows = 1
    calls: list[list[tuple[str, list[tuple[int, str, str]]]]] = [[] for _ in range(senders)]
    per_device = WINDOWS // DEVICES
    for offset in range(0, per_device, batch):
        for i, (device, items) in enumerate(uploads.items()):
            calls[i % senders].append((device, items[offset : offset + batch]))
    failures: list[str] = []

    def send(mine: list[tuple[str, list[tuple[int, str, str]]]]) -> None:
        for device, items in mine:
            result = ingest.ingest(device, items, "grpc")
            if len(result.acked) != len(items):
                failures.append(f"{device}: {result.errors}")

    threads = [threading.Thread(target=send, args=(c,)) for c in calls]
    served = None if server is None else server.cpu_seconds()
    started, cpu = time.perf_counter(), time.process_time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall, used = time.perf_counter() - started, time.process_time() - cpu
    if served is not None:
        served = server.cpu_seconds() - served
    if failures:
        raise RuntimeError(failures[0])
    return wall, used, ingest.group.uploads / max(1, ingest.group.commits), served


def _ingest_previous(
    repos: Any, uploads: dict[str, list[tuple[int, str, str]]], batch: int
) -> tuple[float, float]:
    """The ingest path as it was before this benchmark (side by side): ``json.loads`` twice
    (checks, then decoding), ``model_validate`` on the dict, ``model_dump`` + ``json.dumps``,
    then per window: an INSERT of the upload, a SELECT of its package, an INSERT of the
    window, one transaction per upload."""
    from control_plane.services.ingest import BUCKET_S, check_upload
    from control_plane.store.sql.base import dumps
    from edge_agent.core.windows import TelemetryWindow

    calls = []
    per_device = WINDOWS // DEVICES
    for offset in range(0, per_device, batch):
        for device, items in uploads.items():
            calls.append((device, items[offset : offset + batch]))
    started, cpu = time.perf_counter(), time.process_time()
    for device, items in calls:
        decoded = []
        for seq, kind, body_json in items:
            if check_upload(device, seq, kind, body_json) is not None:
                raise RuntimeError(f"{device} {seq}: malformed")
            w = TelemetryWindow.model_validate(json.loads(body_json))
            decoded.append((seq, kind, body_json, w, dumps(w.histograms()),
                            dumps(w.latency_ms.model_dump(mode="json"))))  # fmt: skip
        with repos.db.transaction() as tx:
            for seq, kind, body_json, w, hist, lat in decoded:
                if not tx.execute(
                    "INSERT INTO uploads (device_id, seq, kind, body_json, received_at, transport)"
                    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (device_id, seq) DO NOTHING",
                    [device, seq, kind, body_json, 1.0, "grpc"],
                ):
                    continue
                package = tx.row(
                    "SELECT sha256, profile_id FROM packages WHERE package_id = ?"
                    " ORDER BY created_at DESC LIMIT 1",
                    [w.package_id],
                )
                tx.execute(
                    "INSERT INTO telemetry_windows (device_id, seq, model_name, model_version,"
                    " package_id, package_sha256, profile_id, started_at, ended_at, bucket_start,"
                    " requests, rows_scored, errors, invalid, histograms_json, latency_json,"
                    " received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (device_id, seq) DO NOTHING",
                    [device, seq, w.model_name, w.model_version, w.package_id,
                     package and package["sha256"], package and package["profile_id"],
                     w.started_at, w.ended_at, w.started_at // BUCKET_S * BUCKET_S, w.requests,
                     w.rows, w.errors, w.invalid, hist, lat, 1.0],
                )  # fmt: skip
    return time.perf_counter() - started, time.process_time() - cpu


def _path_label(r: dict[str, Any]) -> str:
    from control_plane.store.sql.fleet import UPLOAD_CHUNK
    from control_plane.store.sql.monitoring import WINDOW_ROWS

    pg = r["backend"] == "postgresql"
    if r["path"] == "previous":
        compression = ", pglz" if pg else ""
        return (
            f"previous: one uploads INSERT per group, 1 window a statement{compression},"
            " writer woken per upload"
        )
    compression = ", lz4" if pg else ""
    return (
        f"now: uploads {UPLOAD_CHUNK} rows a statement, windows {WINDOW_ROWS}{compression},"
        " writer woken once"
    )


Config = tuple[int, int, int, str, bool, bool]


def _configs(backend: str) -> list[Config]:
    """(windows per upload, senders, group commit, durability, previous path, comparison
    round) to run: the configurations, then the previous and current path alternated (1
    window per upload, 32 senders, group commit 64) for the side-by-side medians."""
    out = [(*c, "", False, False) for c in CONFIGS]
    for _ in range(COMPARE_ROUNDS):
        out += [(1, SENDERS, 64, "", True, True), (1, SENDERS, 64, "", False, True)]
    if backend == "sqlite":
        out += [(*c, "full", False, False) for c in FULL_CONFIGS]
    return out


def _measure(
    backend: str,
    url: Callable[[], str],
    manifest: Any,
    template: dict[str, Any],
    configs: list[Config],
    server: Any = None,
) -> list[dict[str, Any]]:
    from control_plane.services.audit import AuditService
    from control_plane.services.monitoring import MonitoringService

    rows = []
    for batch, senders, group, durability, previous, compare in configs:
        target = url()
        if durability and backend == "sqlite":
            target = f"sqlite:///{target}?synchronous={durability}"
        repos = _open(target, manifest)
        if previous and backend == "postgresql":
            _pglz(target)
        try:
            start = time.time() - 86400.0
            uploads = _uploads(template, start)
            first, first_cpu, per_tx, served = _ingest(
                repos, uploads, batch, senders, group, previous, server
            )
            again, _, _, _ = _ingest(repos, uploads, batch, senders, group, previous)  # twice
            counts = repos.monitoring.window_counts()
            stored = counts[("digits", "1")][0]
            raw = len(repos.uploads.list(limit=1, device_id="dev-0000").items)
            if stored != WINDOWS or raw != 1:
                raise RuntimeError(f"{backend}: {stored} windows stored of {WINDOWS}")
            row = {
                "backend": backend,
                "batch": batch,
                "senders": senders,
                "group_commit": group,
                "synchronous": durability.upper() or ("NORMAL" if backend == "sqlite" else ""),
                "path": "previous" if previous else "now",
                "comparison_round": compare,
                "uploads_per_transaction": round(per_tx, 1),
                "windows": WINDOWS,
                "seconds": round(first, 2),
                "windows_per_s": round(WINDOWS / first),
                "windows_per_cpu_s": round(WINDOWS / first_cpu),
                "cpu_us_per_window": round(first_cpu / WINDOWS * 1e6),
                "server_cpu_us_per_window": None if served is None
                else round(served / WINDOWS * 1e6),
                "resend_windows_per_s": round(WINDOWS / again),
                "stored_after_resend": stored,
            }  # fmt: skip
            if (
                batch == CONFIGS[-1][0] and not durability and not compare
            ):  # the previous path, side by side, on a fresh database
                fresh = url()
                before = _open(fresh, manifest)
                if backend == "postgresql":
                    _pglz(fresh)  # its schema as it was then too
                try:
                    wall, cpu = _ingest_previous(before, uploads, batch)
                    if before.monitoring.window_counts()[("digits", "1")][0] != WINDOWS:
                        raise RuntimeError(f"{backend}: the previous path lost windows")
                finally:
                    before.close()
                row["previous_windows_per_s"] = round(WINDOWS / wall)
                row["previous_windows_per_cpu_s"] = round(WINDOWS / cpu)
            if batch == CONFIGS[-1][0] and not durability and not compare:  # drift over the fleet
                monitoring = MonitoringService(repos, AuditService(repos.audit))
                times = []
                for _ in range(DRIFT_RUNS):
                    t = time.perf_counter()
                    answer = monitoring.drift("digits", "1")
                    times.append(time.perf_counter() - t)
                report = answer["reports"][0]
                assert answer["windows"] == WINDOWS and len(report["features"]) == FEATURES + 2
                recent = start + 30.0  # each device's first window only
                one = []
                for _ in range(DRIFT_RUNS):
                    t = time.perf_counter()
                    answer = monitoring.drift("digits", "1", until=recent)
                    one.append(time.perf_counter() - t)
                assert answer["windows"] == DEVICES, answer["windows"]
                row["drift_all_s"] = round(statistics.median(times), 3)
                row["drift_1000_windows_s"] = round(statistics.median(one), 3)
                row["drift_status"] = report["status"]
            rows.append(row)
            logger.info("%s", row)
        finally:
            repos.close()
    return rows


def run(results_dir: Path) -> str:
    sys.path.insert(0, str(ROOT / "tests"))
    from pg_support import INSTALL_HINT, PostgresServer, find_pg_bin

    manifest = _manifest()
    template = _template(manifest)
    work = Path(tempfile.mkdtemp(prefix="fleetcast-bench-ingest-"))
    databases = iter(range(100))
    load_start = os.getloadavg()[0]
    rows = _measure(
        "sqlite", lambda: str(work / f"store-{next(databases)}.db"), manifest, template,
        _configs("sqlite"),
    )  # fmt: skip
    bin_dir = find_pg_bin()
    if bin_dir is None:
        logger.warning("%s; PostgreSQL left out", INSTALL_HINT)
    else:
        for durable in (False, True):
            pg = PostgresServer(bin_dir, durable=durable).start()
            try:
                configs = (
                    [(*c, "durable", False, False) for c in DURABLE_CONFIGS]
                    if durable
                    else _configs("postgresql")
                )
                rows += _measure("postgresql", pg.create_database, manifest, template, configs, pg)
            finally:
                pg.stop()
    load = os.getloadavg()[0]
    size = len(json.dumps({**template, "device_id": "dev-0000"}))
    now = [r for r in rows if r["path"] == "now" and not r["comparison_round"]]

    def name(r: dict[str, Any]) -> str:
        if r["synchronous"] == "DURABLE":
            return f"{r['backend']} (fsync, synchronous_commit on)"
        return r["backend"] + (f" ({r['synchronous']})" if r.get("synchronous") else "")

    def server_cpu(r: dict[str, Any]) -> str:
        v = r["server_cpu_us_per_window"]
        return "in process" if v is None else str(v)

    table = markdown_table(
        ["backend", "windows per upload", "concurrent senders", "group commit (max uploads)",
         "uploads per transaction", "windows/s (wall)",
         "windows per CPU-second of the ingesting process", "server CPU per window (us)",
         "resent windows/s", "stored after resend"],
        [[name(r), r["batch"], r["senders"], "off" if r["group_commit"] == 1
          else r["group_commit"], r["uploads_per_transaction"], r["windows_per_s"],
          r["windows_per_cpu_s"], server_cpu(r), r["resend_windows_per_s"],
          r["stored_after_resend"]]
         for r in now],
    )  # fmt: skip
    compared: list[list[object]] = []
    for backend in dict.fromkeys(r["backend"] for r in rows):
        for path in ("previous", "now"):
            mine = [r for r in rows if r["backend"] == backend and r["path"] == path
                    and r["comparison_round"]]  # fmt: skip
            if not mine:
                continue
            compared.append(
                [name(mine[0]), _path_label(mine[0]),
                 " / ".join(f"{r['windows_per_s']:,}" for r in mine),
                 f"{statistics.median(r['windows_per_s'] for r in mine):,.0f}",
                 f"{statistics.median(r['cpu_us_per_window'] for r in mine):.0f}",
                 "in process" if mine[0]["server_cpu_us_per_window"] is None else
                 f"{statistics.median(r['server_cpu_us_per_window'] for r in mine):.0f}",
                 f"{statistics.median(r['uploads_per_transaction'] for r in mine):.1f}"]
            )  # fmt: skip
    branch = markdown_table(
        ["backend (1 window per upload, 32 senders, group commit 64)", "path",
         f"windows/s (wall), {COMPARE_ROUNDS} rounds", "median windows/s",
         "median ingesting-process CPU per window (us)", "median server CPU per window (us)",
         "uploads per transaction"],
        compared,
    )  # fmt: skip
    previous = markdown_table(
        ["backend (100 windows per upload)", "path", "windows/s (wall)",
         "windows per CPU-second"],
        [row for r in rows if "previous_windows_per_s" in r for row in (
            [r["backend"], "previous: parse twice, a statement per row",
             r["previous_windows_per_s"], r["previous_windows_per_cpu_s"]],
            [r["backend"], "now: pydantic from JSON once, batched statements",
             r["windows_per_s"], r["windows_per_cpu_s"]],
        )],
    )  # fmt: skip
    drift = markdown_table(
        ["backend", "1,000 windows (1 per device)", f"{WINDOWS:,} windows (20 per device)"],
        [[r["backend"], f"{r['drift_1000_windows_s']} s", f"{r['drift_all_s']} s"]
         for r in rows if "drift_all_s" in r],
    )  # fmt: skip
    verdicts = []
    for backend in dict.fromkeys(r["backend"] for r in now):
        for batch in (1, CONFIGS[-1][0]):
            mine = [r for r in now if r["backend"] == backend and r["batch"] == batch]
            top = max(mine, key=lambda r: r["windows_per_s"])
            v = top["windows_per_s"]
            how = f"{top['senders']} sender{'s' if top['senders'] > 1 else ''}"
            if top.get("synchronous"):
                how += f", {top['synchronous']}"
            verdicts.append(
                f"{backend}, {batch} window{'s' if batch > 1 else ''} per upload: {v:,}/s"
                f" ({how}; {'meets' if v >= TARGET else 'below'} the {TARGET:,.0f}/s target)"
            )
    verdict = "; ".join(verdicts)
    markdown = "\n".join(
        [
            f"## Telemetry ingest: {FEATURES} features x {BINS} bins, {DEVICES:,} devices",
            "",
            f"Each window is {size:,} bytes of JSON (histograms of {FEATURES} input features"
            f" x {BINS} bins and 2 output features, a KLL latency sketch); decoded and validated"
            " once, stored as the raw upload plus the indexed window, through"
            " `IngestService.ingest`. Concurrent senders are threads of this process calling"
            " `ingest` at once (as the gRPC server's worker threads do), each for its own"
            " devices; with the group commit on, uploads arriving while a commit is in flight"
            " share the next transaction (each acked after it commits); off, one transaction"
            " per upload. Every upload is then delivered again: acked, stored once (checked)."
            " PostgreSQL runs on the same 2 cores, as the tests run it (fsync and"
            " synchronous_commit off: a scratch server) and, on the row so marked, with its"
            " durable defaults (an ack means the commit is on disk); its CPU per window is"
            " the server processes' own, read from /proc.",
            "",
            table,
            "",
            f"Best: {verdict}.",
            "",
            "Before and after the lz4 / chunked-INSERT branch, side by side in this run,"
            f" {COMPARE_ROUNDS} rounds alternated, each on a fresh database (the previous path"
            " rebuilt in process: uploads INSERTed in one statement per group, which psycopg"
            " re-parses at every call past 50 parameters; windows one row a statement; pglz"
            " TOAST compression; the lingering group-commit writer woken at every queued"
            " upload):",
            "",
            branch,
            "",
            BEFORE,
            "",
            "The ingest path before the first batching branch, side by side in this run:",
            "",
            previous,
            "",
            f"### Drift over the store ({FEATURES + 2} features, `MonitoringService.drift`,"
            f" median of {DRIFT_RUNS}: read, merge per package, evaluate)",
            "",
            drift,
            "",
            f"Host load average (1 min) when the run started: {load_start:.1f}, when it"
            f" ended: {load:.1f}, on {os.cpu_count()} cores (the machine is shared: wall-clock"
            " rates fall with the load). One process; Python threads share one core for the"
            " decoding (the GIL), so concurrency pays through fewer commits and round trips,"
            " not parallel parsing. The CPU-second column is this process's own CPU time"
            " (decoding, validation, SQLite's work); PostgreSQL's server CPU is the column"
            " beside it.",
        ]
    )
    write_results(
        results_dir, "ingest", markdown,
        {"rows": rows, "load_average": load, "load_average_start": load_start,
         "window_bytes": size,
         "versions": tool_versions(["psycopg", "pydantic", "datasketches"])},
    )  # fmt: skip
    return markdown
