"""Telemetry windows: bins equal the compiler's, sketches, captures, bounded memory."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from datasketches import kll_floats_sketch
from edge_support import tracemalloc_growth
from manifests import make_manifest

from edge_agent.core.bins import bin_counts, class_features, feature_matrix
from edge_agent.core.telemetry import ModelTelemetry, TelemetryConfig, TensorBinner


@pytest.mark.parametrize("shape", [(8,), (3, 10, 10)])
def test_binner_matches_bin_counts_feature_by_feature(shape: tuple[int, ...]) -> None:
    manifest = make_manifest(shape)
    stats = manifest.reference.inputs[0]
    binner = TensorBinner(stats)
    rng = np.random.default_rng(1)
    batch = rng.normal(scale=2.0, size=(64, *shape)).astype(np.float32)
    batch.flat[:3] = [np.nan, np.inf, -np.inf]
    counts = binner.counts(batch)
    assert counts is not None
    matrix = feature_matrix(batch, stats.feature_axis)
    for i, (feature, part) in enumerate(zip(stats.features, binner.split(counts), strict=True)):
        expected = bin_counts(matrix[:, i], np.asarray(feature.edges))
        assert part["counts"] == expected.tolist(), feature.name


def test_class_outputs_count_predicted_class_and_top_score() -> None:
    manifest = make_manifest(classes=4)
    stats = manifest.reference.outputs[0]
    binner = TensorBinner(stats)
    scores = np.random.default_rng(2).random((50, 4)).astype(np.float32)
    counts = binner.counts(scores)
    assert counts is not None
    predicted_part, top_part = binner.split(counts)
    predicted, top = class_features(scores)
    assert predicted_part["counts"] == np.bincount(predicted, minlength=4).tolist()
    assert top_part["counts"] == bin_counts(top, np.asarray(stats.features[1].edges)).tolist()


def test_window_counts_latency_and_sequence() -> None:
    now = [100.0]
    telemetry = ModelTelemetry(make_manifest(), clock=lambda: now[0])
    x = np.zeros((3, 8), np.float32)
    y = np.tile(np.array([[0.1, 0.7, 0.1, 0.1]], np.float32), (3, 1))
    latencies = [0.001 * (i + 1) for i in range(100)]
    for latency in latencies:
        telemetry.record({"input": x}, {"output": y}, latency)
    telemetry.record_failure("invalid", 0.0005)
    telemetry.record_failure("error", 0.0005)
    now[0] = 160.0
    window = telemetry.close_window("dev-1", 7)
    json.dumps(window, allow_nan=False)
    assert (window["device_id"], window["sequence"]) == ("dev-1", 7)
    assert (window["started_at"], window["ended_at"]) == (100.0, 160.0)
    assert (window["requests"], window["rows"], window["errors"], window["invalid"]) == (
        102,
        300,
        1,
        1,
    )
    latency = window["latency_ms"]
    assert latency["count"] == 100  # successful calls only
    assert latency["p50"] == pytest.approx(50.0, abs=3.0)
    assert latency["p99"] == pytest.approx(99.0, abs=3.0)
    sketch = kll_floats_sketch.deserialize(base64.b64decode(latency["kll"]))
    assert sketch.n == 100
    predicted = window["outputs"][0]["features"][0]
    assert predicted["counts"][1] == 300 and sum(predicted["counts"]) == 300
    assert all(sum(f["counts"]) == 300 for f in window["inputs"][0]["features"])
    empty = telemetry.close_window("dev-1", 8)
    assert empty["requests"] == 0 and empty["latency_ms"]["p50"] is None


def test_captures_are_sampled_and_bounded() -> None:
    config = TelemetryConfig(capture_rate=0.5, max_captures=5, max_capture_rows=2)
    telemetry = ModelTelemetry(make_manifest(), config, seed=3)
    x = np.arange(40, dtype=np.float32).reshape(5, 8)
    y = np.zeros((5, 4), np.float32)
    ids = [telemetry.record({"input": x}, {"output": y}, 0.001) for _ in range(100)]
    window = telemetry.close_window("d", 1)
    captures = window["captures"]
    assert len(captures) == 5 and window["captures_dropped"] > 20
    assert {c["prediction_id"] for c in captures} <= set(ids)
    assert len(set(ids)) == 100
    assert captures[0]["inputs"]["input"] == x[:2].tolist()
    assert telemetry.capture({"input": x}, {"output": y}, "app-1")
    assert telemetry.close_window("d", 2)["captures"][0]["source"] == "application"


def test_no_captures_at_rate_zero() -> None:
    telemetry = ModelTelemetry(make_manifest(), TelemetryConfig(capture_rate=0.0))
    for _ in range(50):
        telemetry.record(
            {"input": np.zeros((1, 8), np.float32)}, {"output": np.zeros((1, 4), np.float32)}, 0.001
        )
    assert telemetry.close_window("d", 1)["captures"] == []


def test_memory_stays_flat_over_a_long_run() -> None:
    config = TelemetryConfig(capture_rate=1.0, max_captures=8)
    telemetry = ModelTelemetry(make_manifest(), config, seed=0)
    x = np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32)
    y = np.random.default_rng(1).random((4, 4)).astype(np.float32)

    def run(calls: int) -> None:
        for i in range(calls):
            telemetry.record({"input": x}, {"output": y}, 0.001 + i * 1e-7)
            if i % 500 == 499:
                telemetry.close_window("d", i)

    growth = tracemalloc_growth(run, warmup=2_000, calls=10_000)
    assert growth < 256 * 1024, f"telemetry grew by {growth} bytes over 10k calls"


def test_health_counts_failures() -> None:
    telemetry = ModelTelemetry(make_manifest())
    telemetry.record(
        {"input": np.zeros((1, 8), np.float32)}, {"output": np.zeros((1, 4), np.float32)}, 0.002
    )
    telemetry.record_failure("error", 0.001)
    health = telemetry.health()
    assert (health.requests, health.failures) == (2, 1)
    assert health.error_rate == 0.5 and health.latency_ms_p95 is not None
