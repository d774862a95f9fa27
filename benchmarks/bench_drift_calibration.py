"""False-alarm rate and detection power of the drift decision rule (docs/monitoring.md).

20 features, reference of 5,000 rows (quantile bins from raw N(0, 1) data, a
fresh reference per trial so its own sampling noise is included), windows
drawn from the generating distribution by multinomial draws on the reference
bins (exactly what a device's histogram of that many rows would be). Null:
no feature shifted; power: one feature's mean shifted by 0.5 std.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from control_plane.core.drift import DriftThresholds, evaluate_many
from control_plane.core.stats import numeric_stats
from edge_agent.core.manifest import FeatureStats

FEATURES = 20
REFERENCE_ROWS = 5000
TRIALS = 100
WINDOWS = 20  # per trial
SHIFTED = ("x", "f3")


def _probs(feature: FeatureStats, shift: float) -> np.ndarray:
    edges = np.asarray(feature.edges)
    cdf = stats.norm.cdf(edges[1:-1] - shift)
    return np.diff(np.concatenate(([0.0], cdf, [1.0])))


def _rates(rng: np.random.Generator, rows: int, shift: float) -> tuple[float, float, float]:
    """(share of null windows with any flag, per-window power on f3, share of others flagged)."""
    any_flag = caught = others = total = 0
    for _ in range(TRIALS):
        reference = {
            ("x", f"f{i}"): numeric_stats(f"f{i}", rng.normal(size=REFERENCE_ROWS))
            for i in range(FEATURES)
        }
        windows = {
            k: rng.multinomial(rows, _probs(f, shift if k == SHIFTED else 0.0), size=WINDOWS)
            for k, f in reference.items()
        }
        for report in evaluate_many(reference, windows):
            total += 1
            any_flag += bool(report.drifted)
            caught += SHIFTED in report.drifted
            others += sum(1 for k in report.drifted if k != SHIFTED)
    return any_flag / total, caught / total, others / (total * (FEATURES - 1))


def run(results_dir: Path) -> str:
    rng = np.random.default_rng(7)
    t = DriftThresholds()
    rows_list = (100, 200, 500, 1000, 10_000, 1_000_000)
    data: dict[str, Any] = {"alpha": t.alpha, "psi_floor": t.psi_floor, "rows": {}}
    lines = [
        "## Drift decision rule: false alarms and detection",
        "",
        f"alpha = {t.alpha} (Holm over {FEATURES} features), PSI floor = {t.psi_floor}, "
        f"reference {REFERENCE_ROWS:,} rows (fresh per trial), {TRIALS * WINDOWS:,} windows "
        "per cell.",
        "",
        "| rows per window | null: windows with any flag | 0.5 std shift: power per window "
        "| windows to catch it (99 %) | 0.5 std shift: other features flagged |",
        "| --- | --- | --- | --- | --- |",
    ]
    for rows in rows_list:
        null_any, _, _ = _rates(rng, rows, 0.0)
        _, power, others = _rates(rng, rows, 0.5)
        needed = (
            1
            if power >= 0.99
            else int(np.ceil(np.log(0.01) / np.log(1 - power)))
            if power
            else None
        )
        data["rows"][rows] = {"null_any": null_any, "power": power, "others": others, "n99": needed}
        lines.append(
            f"| {rows:,} | {null_any:.2%} | {power:.1%} | {needed if needed else 'never'} "
            f"| {others:.3%} |"
        )
    lines += [
        "",
        "Windows to catch it: the smallest n with 1 - (1 - power)^n >= 0.99, windows independent. "
        "Command: `PYTHONPATH=$PWD .venv/bin/python -m benchmarks drift_calibration`.",
    ]
    markdown = "\n".join(lines) + "\n"
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "drift_calibration.md").write_text(markdown)
    (results_dir / "drift_calibration.json").write_text(json.dumps(data, indent=2))
    return markdown
