from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from control_plane.core.fidelity import fidelity_report
from control_plane.core.hardware import Budgets
from control_plane.core.stats import input_stats, output_stats, reference_statistics
from edge_agent.core.bins import bin_counts, feature_matrix


def test_numeric_features_get_equal_mass_bins() -> None:
    rng = np.random.default_rng(0)
    data = rng.uniform(0, 1, size=(10_000, 3)).astype(np.float32)
    stats = input_stats("x", data)
    assert stats.feature_axis == "element"
    assert [f.name for f in stats.features] == ["x[0]", "x[1]", "x[2]"]
    for feature in stats.features:
        assert feature.edges is not None
        assert list(feature.edges) == sorted(feature.edges)
        assert len(feature.edges) == len(feature.frequencies) + 1 == 11
        assert sum(feature.frequencies) == pytest.approx(1.0)
        assert max(abs(f - 0.1) for f in feature.frequencies) < 0.01
        assert feature.mean == pytest.approx(0.5, abs=0.02)


def test_constant_feature_gets_one_bin_and_outer_bins_are_open() -> None:
    data = np.zeros((50, 2), dtype=np.float32)
    data[:, 1] = np.arange(50)
    stats = input_stats("x", data, feature_names=["flat", "ramp"])
    flat, ramp = stats.features
    assert flat.name == "flat" and flat.frequencies == (1.0,)
    assert ramp.edges is not None
    edges = np.asarray(ramp.edges)
    counts = bin_counts(np.array([-1e9, 1e9, 25.0]), edges)
    assert counts[0] == 1 and counts[-1] == 1 and counts.sum() == 3


def test_large_images_are_cut_per_channel() -> None:
    images = np.random.default_rng(1).normal(size=(20, 3, 32, 32)).astype(np.float32)
    images[:, 2] += 5.0
    stats = input_stats("image", images)
    assert stats.feature_axis == "channel"
    assert len(stats.features) == 3
    assert stats.features[2].mean == pytest.approx(5.0, abs=0.1)
    assert feature_matrix(images, "channel").shape == (20, 3)


def test_classifier_outputs_record_class_frequencies() -> None:
    scores = np.eye(4, dtype=np.float32)[[0, 0, 1, 3, 3, 3]]
    stats = output_stats("logits", scores, "classification")
    predicted, top = stats.features
    assert predicted.kind == "categorical"
    assert predicted.categories == (0, 1, 2, 3)
    assert predicted.frequencies == pytest.approx((2 / 6, 1 / 6, 0.0, 3 / 6))
    assert top.name == "top_score"
    full = reference_statistics({"x": scores}, {"logits": scores}, "classification", "ref.npz")
    assert full.rows == 6 and full.source == "ref.npz"


def _logits(labels: np.ndarray, classes: int = 10) -> np.ndarray:
    return np.eye(classes, dtype=np.float32)[labels] * 5.0


def test_fidelity_counts_agreement_and_accuracy() -> None:
    labels = np.arange(100) % 10
    reference = {"out": _logits(labels)}
    flipped = labels.copy()
    flipped[:3] = (flipped[:3] + 1) % 10  # three rows now disagree (and are wrong)
    report = fidelity_report(
        reference,
        {"out": _logits(flipped)},
        "classification",
        _budgets(max_top1_loss=0.01, max_metric_drop=0.05),
        labels=labels,
    )
    assert report.top1_agreement == pytest.approx(0.97)
    assert report.metric is not None
    assert report.metric.fp32 == 1.0 and report.metric.candidate == pytest.approx(0.97)
    assert report.max_abs_error == pytest.approx(5.0)
    assert not report.passed
    assert "top-1 agreement 0.9700 below 0.9900" in report.reasons[0]
    loose = fidelity_report(
        reference,
        {"out": _logits(flipped)},
        "classification",
        _budgets(max_top1_loss=0.05, max_metric_drop=0.05),
        labels=labels,
    )
    assert loose.passed and loose.reasons == ()


def test_fidelity_flags_nan_and_abs_error_budget() -> None:
    reference = {"y": np.ones((10, 1), dtype=np.float32)}
    candidate = {"y": np.full((10, 1), np.nan, dtype=np.float32)}
    report = fidelity_report(reference, candidate, "regression", _budgets())
    assert not report.passed and "NaN" in report.reasons[0]
    near = {"y": reference["y"] + 0.2}
    report = fidelity_report(reference, near, "regression", _budgets(max_abs_error=0.1))
    assert not report.passed and "max abs error" in report.reasons[-1]
    assert "relative error" in report.reasons[0]
    assert report.top1_agreement is None


def _budgets(**values: Any) -> Budgets:
    return Budgets(max_package_bytes=1 << 30, max_memory_bytes=1 << 30, **values)


def test_regression_is_judged_on_relative_error_and_mae_with_labels() -> None:
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(200, 1)).astype(np.float32)
    labels = reference[:, 0] + rng.normal(scale=0.3, size=200).astype(np.float32)
    slightly = {"y": reference + 0.01}
    report = fidelity_report({"y": reference}, slightly, "regression", _budgets(), labels=labels)
    assert report.passed and report.task == "regression"
    assert report.relative_error == pytest.approx(0.01 / reference.std(), rel=1e-3)
    assert report.measure is not None and "relative error" in report.measure
    assert report.metric is not None and report.metric.name == "mae"
    off = fidelity_report({"y": reference}, {"y": reference * 1.2}, "regression", _budgets())
    assert not off.passed and off.reasons[0].startswith("relative error")


def test_embeddings_are_judged_on_cosine_and_nearest_neighbours() -> None:
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(20, 32))
    rows = np.repeat(centres, 5, axis=0) + rng.normal(scale=0.3, size=(100, 32))
    unit = (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)
    close = unit + rng.normal(scale=0.002, size=unit.shape).astype(np.float32)
    report = fidelity_report({"e": unit}, {"e": close}, "embedding", _budgets())
    assert report.passed and report.mean_cosine is not None and report.mean_cosine > 0.999
    assert report.nn_agreement is not None and report.nn_agreement >= 0.9
    assert report.top1_agreement is None
    noisy = unit + rng.normal(scale=0.2, size=unit.shape).astype(np.float32)
    bad = fidelity_report({"e": unit}, {"e": noisy}, "embedding", _budgets())
    assert not bad.passed
    assert any("mean cosine" in r for r in bad.reasons)
    assert bad.nn_agreement is not None and bad.nn_agreement < report.nn_agreement


def test_task_is_inferred_with_a_reason() -> None:
    from control_plane.compiler.tasks import infer_task

    rng = np.random.default_rng(2)
    unit = rng.normal(size=(50, 384)).astype(np.float32)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    task, why = infer_task({"e": unit}, None)
    assert task == "embedding" and "unit length" in why
    logits = rng.normal(size=(50, 10)).astype(np.float32)
    assert infer_task({"y": logits}, np.arange(50) % 10)[0] == "classification"
    assert infer_task({"y": logits}, None)[0] == "classification"
    assert infer_task({"y": logits[:, :1]}, None) == ("regression", "one output value per row")
    assert infer_task({"y": logits[:, :1]}, rng.normal(size=50))[0] == "regression"
    wide = rng.normal(size=(50, 256)).astype(np.float32)
    task, why = infer_task({"e": wide}, None)
    assert task == "embedding" and "--task classification" in why
