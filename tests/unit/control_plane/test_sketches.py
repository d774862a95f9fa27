"""Merging windows: histograms add exactly, KLL merges within its rank error."""

from __future__ import annotations

import base64

import numpy as np
from datasketches import kll_floats_sketch

from control_plane.core.drift import drift_by_group
from control_plane.core.sketches import (
    add_histograms,
    group_windows,
    kll_rank_error,
    merge_kll,
    window_histograms,
)
from control_plane.core.stats import numeric_stats
from edge_agent.core.bins import bin_counts


def _window(device: str, version: str, values: np.ndarray, edges: np.ndarray) -> dict:
    sketch = kll_floats_sketch(200)
    sketch.update(values.astype(np.float32))
    return {
        "device_id": device,
        "model_name": "m",
        "model_version": version,
        "requests": values.size,
        "rows": values.size,
        "errors": 1,
        "invalid": 0,
        "latency_ms": {"kll": base64.b64encode(sketch.serialize()).decode("ascii")},
        "inputs": [
            {
                "tensor": "x",
                "feature_axis": "element",
                "features": [
                    {"name": "f0", "kind": "numeric", "counts": bin_counts(values, edges).tolist()}
                ],
            }
        ],
        "outputs": [],
    }


def test_merged_histograms_equal_the_histogram_of_the_concatenated_data():
    rng = np.random.default_rng(1)
    edges = np.asarray(numeric_stats("f0", rng.normal(size=2000)).edges)
    parts = [rng.normal(size=n) for n in (10, 500, 3333)]
    merged = add_histograms(window_histograms(_window("d", "1", p, edges)) for p in parts)
    np.testing.assert_array_equal(merged[("x", "f0")], bin_counts(np.concatenate(parts), edges))


def test_merged_kll_answers_ranks_of_the_concatenated_data_within_its_error():
    rng = np.random.default_rng(2)
    parts = [rng.lognormal(size=n).astype(np.float32) for n in (5000, 20_000, 75_000)]
    sketches = []
    for p in parts:
        s = kll_floats_sketch(200)
        s.update(p)
        sketches.append(s)
    merged = merge_kll(sketches)
    data = np.sort(np.concatenate(parts))
    assert merged.n == data.size
    eps = kll_rank_error(merged)
    assert 0.0 < eps < 0.02
    for q in (0.01, 0.1, 0.5, 0.9, 0.99):
        value = float(np.quantile(data, q))
        exact = np.searchsorted(data, value, side="right") / data.size
        assert abs(merged.get_rank(value) - exact) <= eps


def test_group_windows_merges_per_version_and_group():
    rng = np.random.default_rng(3)
    edges = np.asarray(numeric_stats("f0", rng.normal(size=2000)).edges)
    a, b, c = (rng.normal(size=n) for n in (100, 200, 300))
    windows = [
        _window("d1", "1", a, edges),
        _window("d2", "1", b, edges),
        _window("d3", "2", c, edges),
    ]
    merged = group_windows(windows, {"d1": "eu", "d2": "eu", "d3": "eu"})
    assert set(merged) == {("m", "1", "eu"), ("m", "2", "eu")}
    eu1 = merged[("m", "1", "eu")]
    assert eu1.windows == 2 and eu1.requests == 300 and eu1.latency.n == 300
    assert eu1.error_rate == 2 / 300
    np.testing.assert_array_equal(
        eu1.histograms[("x", "f0")], bin_counts(np.concatenate((a, b)), edges)
    )


def test_drift_score_per_version_and_group_from_merged_windows():
    rng = np.random.default_rng(4)
    stats = numeric_stats("f0", rng.normal(size=5000))
    edges = np.asarray(stats.edges)
    windows = [
        _window("d1", "1", rng.normal(size=300), edges),
        _window("d2", "1", rng.normal(size=300), edges),
        _window("d3", "1", rng.normal(1.0, 1.0, size=300), edges),  # a shifted group
        _window("d4", "9", rng.normal(size=300), edges),  # no reference registered
    ]
    merged = group_windows(windows, {"d1": "eu", "d2": "eu", "d3": "us", "d4": "eu"})
    reports = drift_by_group(
        {("m", "1"): {("x", "f0"): stats}},
        {key: acc.histograms for key, acc in merged.items()},
    )
    assert set(reports) == {("m", "1", "eu"), ("m", "1", "us")}
    assert reports[("m", "1", "eu")].drifted_share == 0.0
    assert reports[("m", "1", "eu")].features[0].rows == 600
    assert (
        reports[("m", "1", "us")].drifted_share == 1.0 and reports[("m", "1", "us")].dataset_drift
    )
