"""Delayed labels: the join, measured metrics per bucket, and the CBPE-style estimate on digits."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import train_test_split

from control_plane.core.accuracy import (
    Capture,
    ConfidenceCalibrator,
    Feedback,
    calibrate,
    captures_from_window,
    estimated_metrics,
    join_feedback,
    measured_metrics,
    uncalibrated_confidence,
)


@pytest.fixture(scope="module")
def digits_model():
    x, y = load_digits(return_X_y=True)
    x_train, x_rest, y_train, y_rest = train_test_split(x, y, train_size=0.4, random_state=0)
    x_ref, x_live, y_ref, y_live = train_test_split(x_rest, y_rest, train_size=0.5, random_state=1)
    # a deliberately weak model (strong regularisation, few pixels) so errors are frequent
    model = LogisticRegression(C=1e-4, max_iter=500).fit(x_train[:, ::3], y_train)
    return model, (x_ref[:, ::3], y_ref), (x_live[:, ::3], y_live)


def _captures(probabilities: np.ndarray, version: str = "1", group: str = "eu", t0: float = 0.0):
    return [
        Capture(f"p{i}", t0 + i, "digits", version, group, tuple(row))
        for i, row in enumerate(probabilities)
    ]


def test_join_reports_unknown_ids_and_duplicates():
    captures = _captures(np.eye(3))
    feedback = [Feedback("p0", 0), Feedback("nope", 1), Feedback("p2", 1), Feedback("p2", 2)]
    joined = join_feedback(captures, feedback)
    assert joined.unknown_ids == ("nope",)
    assert joined.duplicate_ids == ("p2",)
    assert {(c.prediction_id, f.label) for c, f in joined.matched} == {("p0", 0), ("p2", 2)}


def test_measured_metrics_per_bucket_match_sklearn(digits_model):
    model, _, (x_live, y_live) = digits_model
    proba = model.predict_proba(x_live)
    captures = _captures(proba)  # one prediction a second: buckets of 100 s
    joined = join_feedback(captures, [Feedback(f"p{i}", float(y)) for i, y in enumerate(y_live)])
    buckets = measured_metrics(joined.matched, "classification", bucket_s=100.0)
    assert sum(b.count for b in buckets) == len(y_live)
    first = buckets[0]
    predicted = proba[:100].argmax(axis=1)
    assert first.kind == "measured" and first.count == 100
    assert first.accuracy == pytest.approx(np.mean(predicted == y_live[:100]))
    assert first.f1_macro == pytest.approx(f1_score(y_live[:100], predicted, average="macro"))


def test_mae_for_regression():
    captures = [Capture("a", 0, "r", "1", "g", (2.0,)), Capture("b", 1, "r", "1", "g", (5.0,))]
    joined = join_feedback(captures, [Feedback("a", 1.0), Feedback("b", 5.5)])
    (bucket,) = measured_metrics(joined.matched, "regression")
    assert bucket.mae == pytest.approx(0.75)


def test_confidence_estimate_tracks_accuracy_under_covariate_shift(digits_model):
    """Live traffic re-weighted towards inputs the model finds hard (selection on x only,
    so P(y | x) is unchanged): measured accuracy falls, and the estimate follows it."""
    model, (x_ref, y_ref), (x_live, y_live) = digits_model
    calibrator = ConfidenceCalibrator.fit(model.predict_proba(x_ref), y_ref)
    live_proba = model.predict_proba(x_live)
    correct = live_proba.argmax(axis=1) == y_live
    rng = np.random.default_rng(0)
    measured, estimated = [], []
    for strength in (0.0, 10.0, 20.0):
        weights = np.exp(-strength * live_proba.max(axis=1))
        pick = rng.choice(len(y_live), size=3000, replace=True, p=weights / weights.sum())
        estimate, stderr = calibrator.estimate(live_proba[pick])
        assert 0.0 < stderr < 0.02
        measured.append(correct[pick].mean())
        estimated.append(estimate)
        assert abs(estimate - correct[pick].mean()) <= 0.05
    assert measured[0] - measured[-1] > 0.1  # the shift is real
    assert estimated[0] - estimated[-1] > 0.1  # and the estimate saw it
    (bucket,) = estimated_metrics(_captures(live_proba[:50]), calibrator, bucket_s=1e6)
    assert bucket.kind == "estimated" and bucket.count == 50


def test_captures_from_a_telemetry_window():
    window = {
        "device_id": "d1",
        "model_name": "digits",
        "model_version": "2",
        "captures": [
            {"prediction_id": "x-1", "at": 5.0, "outputs": {"probs": [[0.1, 0.9]]}},
            {"prediction_id": "x-2", "at": 6.0, "outputs": {"probs": None}},  # too large to capture
        ],
    }
    (capture,) = captures_from_window(window, "probs", {"d1": "eu"})
    assert capture.group == "eu" and capture.predicted_class == 1 and capture.model_version == "2"


def test_cbpe_from_the_manifest_calibration_on_held_out_and_corrupted_digits():
    """A real digits classifier (logistic regression on all 64 pixels): the calibration the
    compiler writes into the manifest, from the validation split, estimates the accuracy of
    held-out digits within 0.03 of the measured one; when the digits are corrupted (pixel
    noise and dead pixels) the estimate drops with the measured accuracy."""
    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    x_train, x_rest, y_train, y_rest = train_test_split(x, y, train_size=0.5, random_state=0)
    x_val, x_test, y_val, y_test = train_test_split(x_rest, y_rest, train_size=0.5, random_state=1)
    model = LogisticRegression(C=0.01, max_iter=300).fit(x_train, y_train)
    manifest_calibration = calibrate(model.predict_proba(x_val), y_val, "labels.npz")
    assert manifest_calibration is not None and manifest_calibration.rows == len(y_val)
    calibrator = ConfidenceCalibrator.from_manifest(manifest_calibration)

    clean = model.predict_proba(x_test)
    estimate, stderr = calibrator.estimate(clean)
    measured = float(np.mean(clean.argmax(axis=1) == y_test))
    assert abs(estimate - measured) <= 0.03, (estimate, measured)  # measured: 0.859 vs 0.853

    rng = np.random.default_rng(3)
    corrupted = np.clip(x_test + rng.normal(0, 0.25, x_test.shape), 0, 1)
    corrupted[:, rng.choice(64, size=24, replace=False)] = 0  # dead pixels
    broken = model.predict_proba(corrupted)
    broken_estimate, _ = calibrator.estimate(broken)
    broken_measured = float(np.mean(broken.argmax(axis=1) == y_test))
    assert measured - broken_measured > 0.1  # the corruption hurts
    assert estimate - broken_estimate > 0.05  # and the estimate drops with it
    assert abs(broken_estimate - broken_measured) <= 0.05  # measured: 0.622 vs 0.631


def test_without_a_calibration_the_claimed_confidence_is_used_and_logits_are_softmaxed():
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    np.testing.assert_allclose(uncalibrated_confidence(probabilities), [0.7, 0.8])
    logits = np.log(probabilities) + 5.0  # the same distribution as logits
    np.testing.assert_allclose(uncalibrated_confidence(logits), [0.7, 0.8])
    assert calibrate(probabilities, np.array([0, 2, 1]), "x") is None  # labels do not fit
