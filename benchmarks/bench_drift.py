"""Drift from device sketches vs Evidently's DataDriftPreset on the same raw data.

Data: 20 numeric features of four shapes (normal, lognormal, uniform, gamma).
Fleetcast's side is what the control plane does: reference bins from the
reference rows (compile time), per-device histograms on those bins (each
device's own cost, measured as if one process did all of them), then merge +
evaluate at the control plane. Evidently (installed in its own venv, run in a
subprocess: its pandas pin conflicts with the shared venv's) gets the raw
reference and current frames.

Scenarios: ``drift``: 1M reference rows, 1M current rows with mean shifts of
0.5, 0.25, 0.1, 0.05, 0.02 std on f0, f5, f10, f15, f1; ``null``: no drift,
at 1,000 rows (reference and current 1,000 rows each, many runs) and at 1M.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from control_plane.core.drift import DriftReport, evaluate, evaluate_many
from control_plane.core.stats import numeric_stats
from edge_agent.core.manifest import FeatureStats

logger = logging.getLogger(__name__)

FEATURES = 20
DEVICES = 1000
SHIFTS = {0: 0.5, 5: 0.25, 10: 0.1, 15: 0.05, 1: 0.02}  # feature index -> mean shift in std
SMALL_RUNS_OURS = 200
SMALL_RUNS_EVIDENTLY = 10
EVIDENTLY_PYTHON = os.environ.get("FLEETCAST_EVIDENTLY_PYTHON", "/tmp/evidently-venv/bin/python")
NAMES = [f"f{i}" for i in range(FEATURES)]

_EVIDENTLY_SCRIPT = r"""
import json, resource, sys, time
import numpy as np, pandas as pd
import evidently
from evidently import Report
from evidently.presets import DataDriftPreset
out = []
for ref_path, cur_path in zip(sys.argv[1::2], sys.argv[2::2]):
    names = [f"f{i}" for i in range(20)]
    ref = pd.DataFrame(np.load(ref_path), columns=names)
    cur = pd.DataFrame(np.load(cur_path), columns=names)
    started, cpu = time.perf_counter(), time.process_time()
    snapshot = Report([DataDriftPreset()]).run(current_data=cur, reference_data=ref)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    verdicts, methods = {}, {}
    for m in snapshot.dict()["metrics"]:
        cfg = m["config"]
        if cfg["type"].endswith("ValueDrift"):
            pval = "p_value" in cfg["method"]
            value, threshold = float(m["value"]), float(cfg["threshold"])
            verdicts[cfg["column"]] = value < threshold if pval else value >= threshold
            methods[cfg["column"]] = cfg["method"]
    out.append({"seconds": seconds, "cpu_s": cpu, "verdicts": verdicts, "methods": methods})
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"version": evidently.__version__, "runs": out, "peak_mb": peak}))
"""


def _data(
    rng: np.random.Generator, rows: int, shifts: dict[int, float] | None = None
) -> np.ndarray:
    """(rows, 20) float32: normal, lognormal, uniform, gamma(2) features, shifted in std units."""
    cols = []
    for i in range(FEATURES):
        shape = i // 5
        if shape == 0:
            col, std = rng.normal(size=rows), 1.0
        elif shape == 1:
            col, std = (
                rng.lognormal(0.0, 0.5, size=rows),
                float(np.sqrt((np.e**0.25 - 1) * np.e**0.25)),
            )
        elif shape == 2:
            col, std = rng.uniform(0.0, 1.0, size=rows), float(np.sqrt(1 / 12))
        else:
            col, std = rng.gamma(2.0, 1.0, size=rows), float(np.sqrt(2.0))
        cols.append(col + (shifts or {}).get(i, 0.0) * std)
    return np.column_stack(cols).astype(np.float32)


def _reference(ref: np.ndarray) -> dict[tuple[str, str], FeatureStats]:
    return {("x", n): numeric_stats(n, ref[:, i].astype(np.float64)) for i, n in enumerate(NAMES)}


def _device_histograms(
    reference: dict[tuple[str, str], FeatureStats], cur: np.ndarray, devices: int
) -> dict[tuple[str, str], np.ndarray]:
    """(devices, bins) counts per feature: each device bins its share of the rows."""
    device = np.arange(cur.shape[0]) * devices // cur.shape[0]
    out = {}
    for i, key in enumerate(reference):
        edges = np.asarray(reference[key].edges)
        nbins = edges.size - 1
        bins = np.searchsorted(edges[1:-1], cur[:, i].astype(np.float64), side="right")
        out[key] = np.bincount(device * nbins + bins, minlength=devices * nbins).reshape(
            devices, nbins
        )
    return out


def _ours(reference: dict[tuple[str, str], FeatureStats], cur: np.ndarray) -> dict[str, Any]:
    started = time.perf_counter()
    per_device = _device_histograms(reference, cur, DEVICES)
    binning = time.perf_counter() - started
    times, cpu_times = [], []
    for _ in range(5):  # median of 5: the host is shared
        started, cpu = time.perf_counter(), time.process_time()
        merged = {k: v.sum(axis=0) for k, v in per_device.items()}
        report = evaluate(reference, merged)
        times.append(time.perf_counter() - started)
        cpu_times.append(time.process_time() - cpu)
    return {
        "binning_s": binning,
        "control_s": float(np.median(times)),
        "control_cpu_s": float(np.median(cpu_times)),
        "report": report,
    }


def _verdicts(report: DriftReport) -> dict[str, bool]:
    return {f.key[1]: f.status == "drift" for f in report.features}


def _run_evidently(pairs: list[tuple[np.ndarray, np.ndarray]], work: Path) -> dict[str, Any] | None:
    if not Path(EVIDENTLY_PYTHON).exists():
        logger.warning("no Evidently venv at %s: skipping the comparison", EVIDENTLY_PYTHON)
        return None
    args = []
    for n, (ref, cur) in enumerate(pairs):
        for name, array in (("ref", ref), ("cur", cur)):
            path = work / f"{name}{n}.npy"
            np.save(path, array)
            args.append(str(path))
    done = subprocess.run(
        [EVIDENTLY_PYTHON, "-c", _EVIDENTLY_SCRIPT, *args],
        capture_output=True, text=True, check=True, timeout=3600,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _time_fleet(reference: dict[tuple[str, str], FeatureStats], rng: np.random.Generator) -> float:
    """Per-device reports for 1,000 devices x 20 features, 1,000 rows each (median of 5)."""
    windows = {
        k: rng.multinomial(1000, np.asarray(f.frequencies), size=DEVICES)
        for k, f in reference.items()
    }
    times = []
    for _ in range(5):
        started = time.perf_counter()
        reports = evaluate_many(reference, windows)
        times.append(time.perf_counter() - started)
    assert len(reports) == DEVICES
    return float(np.median(times))


def run(results_dir: Path) -> str:
    rng = np.random.default_rng(2026)
    work = Path(tempfile.mkdtemp(prefix="fleetcast-bench-drift-"))
    ref_big = _data(rng, 1_000_000)
    reference = _reference(ref_big)
    fleet_s = _time_fleet(reference, rng)
    drift_cur = _data(rng, 1_000_000, SHIFTS)
    null_cur = _data(rng, 1_000_000)
    ours_drift, ours_null = _ours(reference, drift_cur), _ours(reference, null_cur)
    small = [(_data(rng, 1000), _data(rng, 1000)) for _ in range(SMALL_RUNS_OURS)]
    ours_small = []
    for ref, cur in small:
        stats = _reference(ref)
        merged = {k: v.sum(axis=0) for k, v in _device_histograms(stats, cur, 1).items()}
        ours_small.append(sum(_verdicts(evaluate(stats, merged)).values()))
    logger.info("running Evidently (1M drift, 1M null, %d x 1,000 null)", SMALL_RUNS_EVIDENTLY)
    pairs = [(ref_big, drift_cur), (ref_big, null_cur), *small[:SMALL_RUNS_EVIDENTLY]]
    evidently = _run_evidently(pairs, work)
    for path in work.iterdir():
        path.unlink()
    work.rmdir()
    return _write(results_dir, fleet_s, ours_drift, ours_null, ours_small, evidently)


def _write(
    results_dir: Path,
    fleet_s: float,
    drift: dict[str, Any],
    null: dict[str, Any],
    small: list[int],
    evidently: dict[str, Any] | None,
) -> str:
    ours_v = _verdicts(drift["report"])
    lines = [
        "## Drift: Fleetcast from device sketches vs Evidently DataDriftPreset",
        "",
        f"Per-device drift reports, {DEVICES:,} devices x {FEATURES} features (1,000 rows each): "
        f"**{fleet_s:.3f} s** (median of 5).",
        "",
        "| 1M rows x 20 features | seconds |",
        "| --- | --- |",
        f"| Fleetcast control plane: merge {DEVICES:,} device histograms + evaluate, median of 5 "
        f"| {drift['control_s']:.4f} |",
        "| Fleetcast device side: binning the 1M rows (spread over the devices) "
        f"| {drift['binning_s']:.3f} |",
    ]
    data: dict[str, Any] = {
        "fleet_1000x20_s": fleet_s,
        "ours": {
            "control_s": drift["control_s"],
            "binning_s": drift["binning_s"],
            "verdicts": ours_v,
            "false_alarms_1m": sum(_verdicts(null["report"]).values()),
            "false_alarm_columns_1000": small,
        },
    }  # fmt: skip
    if evidently is not None:
        ev_drift, ev_null, *ev_small = evidently["runs"]
        ratio = ev_drift["seconds"] / drift["control_s"]
        cpu_ratio = ev_drift["cpu_s"] / drift["control_cpu_s"]
        ratio_all = ev_drift["seconds"] / (drift["control_s"] + drift["binning_s"])
        lines += [
            f"| Evidently {evidently['version']} DataDriftPreset on the raw frames "
            f"| {ev_drift['seconds']:.1f} |",
            "",
            f"Speed ratio from device sketches: **{ratio:,.0f}x** "
            f"({ratio_all:,.0f}x counting the binning of all 1M rows too); in CPU time "
            f"{ev_drift['cpu_s']:.1f} s vs {drift['control_cpu_s']:.4f} s, {cpu_ratio:,.0f}x. "
            f"Evidently's process peaked at {evidently['peak_mb']:,.0f} MB. "
            f"Host load average when the run ended: {os.getloadavg()[0]:.1f} on 2 cores.",
        ]
        data["evidently"] = evidently
    lines += ["", "| feature | shift (std) | Fleetcast | PSI | Evidently | Evidently method |",
              "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    agree = 0
    psi = {f.key[1]: f.psi for f in drift["report"].features}
    for i, name in enumerate(NAMES):
        ev = "-" if evidently is None else evidently["runs"][0]["verdicts"].get(name)
        method = "-" if evidently is None else evidently["runs"][0]["methods"].get(name, "")
        agree += ev == ours_v[name]
        lines.append(
            f"| {name} | {SHIFTS.get(i, 0.0)} | {'drift' if ours_v[name] else '-'} "
            f"| {psi[name]:.4f} | {ev if isinstance(ev, str) else 'drift' if ev else '-'} "
            f"| {method} |"
        )
    small_any = sum(1 for n in small if n) / len(small)
    lines += ["", "| false alarms, no-drift data | Fleetcast | Evidently |", "| --- | --- | --- |"]
    ev_1m = ev_small_mean = ev_small_any = "-"
    if evidently is not None:
        ev_1m = str(sum(evidently["runs"][1]["verdicts"].values()))
        counts = [sum(r["verdicts"].values()) for r in evidently["runs"][2:]]
        ev_small_mean = f"{np.mean(counts):.2f} of 20 (max {max(counts)})"
        ev_small_any = f"{sum(1 for c in counts if c) / len(counts):.0%} of {len(counts)} runs"
    lines += [
        f"| 1M rows: columns flagged | {sum(_verdicts(null['report']).values())} of 20 "
        f"| {ev_1m} of 20 |",
        f"| 1,000 rows: columns flagged per run | {np.mean(small):.2f} of 20 (max {max(small)}) "
        f"| {ev_small_mean} |",
        f"| 1,000 rows: runs with any flag | {small_any:.1%} of {len(small)} runs "
        f"| {ev_small_any} |",
        "",
        f"Verdict agreement on the drift scenario: {agree} of {FEATURES} features"
        + ("" if evidently is not None else " (Evidently not run)")
        + ". "
        "Command: `PYTHONPATH=$PWD .venv/bin/python -m benchmarks drift` "
        "(Evidently from `FLEETCAST_EVIDENTLY_PYTHON`, default /tmp/evidently-venv/bin/python; "
        "see docs/monitoring.md). Both sides share this 2-core host.",
    ]
    markdown = "\n".join(lines) + "\n"
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "drift.md").write_text(markdown)
    (results_dir / "drift.json").write_text(json.dumps(data, indent=2, default=str))
    return markdown
