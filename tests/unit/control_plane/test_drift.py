"""Drift statistics: false alarms under the documented level, detection, agreement with scipy."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from control_plane.core.drift import (
    DriftThresholds,
    chi_square_two_sample,
    evaluate,
    evaluate_many,
    holm_adjust,
    jensen_shannon_distance,
    ks_binned,
    population_stability_index,
    reference_counts,
    sliding_reports,
)
from control_plane.core.sketches import kll_histogram
from control_plane.core.stats import categorical_stats, numeric_stats
from edge_agent.core.bins import bin_counts
from edge_agent.core.manifest import FeatureStats

FEATURES = 20
ALPHA = DriftThresholds().alpha


def _reference(rng: np.random.Generator, rows: int) -> dict[tuple[str, str], FeatureStats]:
    return {("x", f"f{i}"): numeric_stats(f"f{i}", rng.normal(size=rows)) for i in range(FEATURES)}


def _true_bin_probs(feature: FeatureStats, shift: float = 0.0) -> np.ndarray:
    """Probabilities of the reference bins under N(shift, 1), the generating distribution."""
    edges = np.asarray(feature.edges)
    cdf = stats.norm.cdf(edges[1:-1] - shift)
    return np.diff(np.concatenate(([0.0], cdf, [1.0])))


def _alarm_ceiling(trials: int) -> float:
    """alpha plus three binomial standard errors: a rate above this is not sampling luck."""
    return ALPHA + 3.0 * np.sqrt(ALPHA * (1 - ALPHA) / trials)


def test_false_alarms_at_200_rows_stay_under_alpha_with_fresh_references():
    rng = np.random.default_rng(11)
    trials, alarms = 150, 0
    for _ in range(trials):
        reference = _reference(rng, 5000)
        raw = rng.normal(size=(200, FEATURES))
        current = {
            k: bin_counts(raw[:, i], np.asarray(f.edges))
            for i, (k, f) in enumerate(reference.items())
        }
        report = evaluate(reference, current)
        assert report.evaluated == FEATURES
        alarms += bool(report.drifted)
    assert alarms / trials <= _alarm_ceiling(trials)


def test_false_alarms_at_a_million_rows_stay_under_alpha():
    """1M-row windows from the generating distribution (multinomial on the bins) against
    a finite reference: the two-sample test accounts for the reference's own noise."""
    rng = np.random.default_rng(12)
    trials, alarms = 40, 0
    for _ in range(trials):  # a fresh 5,000-row reference each trial, 10 windows against it
        reference = _reference(rng, 5000)
        current = {
            k: rng.multinomial(1_000_000, _true_bin_probs(f), size=10) for k, f in reference.items()
        }
        alarms += sum(bool(r.drifted) for r in evaluate_many(reference, current))
    assert alarms / (trials * 10) <= _alarm_ceiling(trials * 10)


def test_windows_drawn_from_the_reference_bins_stay_under_alpha_at_any_count():
    rng = np.random.default_rng(13)
    reference = _reference(rng, 10_000)
    for rows in (200, 1_000_000):
        current = {
            k: rng.multinomial(rows, np.asarray(f.frequencies) / sum(f.frequencies), size=300)
            for k, f in reference.items()
        }
        reports = evaluate_many(reference, current)
        assert sum(bool(r.drifted) for r in reports) / 300 <= _alarm_ceiling(300)


def test_half_sigma_shift_in_one_feature_is_caught_within_three_windows_others_quiet():
    rng = np.random.default_rng(14)
    reference = _reference(rng, 5000)
    shifted = ("x", "f3")
    sequences, length = 100, 3
    current = {
        k: rng.multinomial(
            200, _true_bin_probs(f, 0.5 if k == shifted else 0.0), size=sequences * length
        )
        for k, f in reference.items()
    }
    reports = evaluate_many(reference, current)
    caught = np.array([shifted in r.drifted for r in reports]).reshape(sequences, length)
    assert caught.any(axis=1).all()  # every sequence of 200-row windows: caught by the 3rd
    assert caught[:, 0].mean() >= 0.9  # most on the first window
    quiet = [k for r in reports for k in r.drifted if k != shifted]
    assert len(quiet) / len(reports) <= _alarm_ceiling(len(reports))
    flagged = next(f for f in reports[0].features if f.key == shifted)
    assert flagged.psi > 0.1 and flagged.ks_d is not None and flagged.ks_d > 0.15
    evidence = json.loads(json.dumps(reports[0].as_dict()))
    assert evidence["drifted"] == ["x/f3"] and evidence["thresholds"]["alpha"] == ALPHA
    assert {f["key"] for f in evidence["features"]} == {f"x/f{i}" for i in range(FEATURES)}


def test_trivial_shift_at_huge_counts_is_significant_but_below_the_effect_floor():
    rng = np.random.default_rng(15)
    big = numeric_stats("f0", rng.normal(size=2_000_000))
    current = {("x", "f0"): rng.multinomial(2_000_000, _true_bin_probs(big, 0.03))}
    report = evaluate({("x", "f0"): big}, current)
    (feature,) = report.features
    assert feature.p_adjusted < ALPHA  # the test alone would flag it
    assert feature.psi < 0.1 and feature.status == "no_drift"


def test_below_min_rows_is_insufficient_not_no_drift():
    rng = np.random.default_rng(16)
    reference = _reference(rng, 5000)
    current = {
        k: rng.multinomial(50, np.asarray(f.frequencies), size=1)[0] for k, f in reference.items()
    }
    report = evaluate(reference, current)
    assert report.status == "insufficient"
    assert {f.status for f in report.features} == {"insufficient"}
    assert report.drifted_share == 0.0 and not report.dataset_drift


@pytest.mark.parametrize("shift", [0.0, 0.1, 0.5, 1.5])
def test_binned_ks_brackets_scipy_ks_2samp_on_the_raw_data(shift):
    rng = np.random.default_rng(17)
    ref_raw, cur_raw = rng.normal(size=4000), rng.normal(shift, 1.0, size=3000)
    feature = numeric_stats("f", ref_raw)
    edges = np.asarray(feature.edges)
    d_bin, bound = ks_binned(bin_counts(ref_raw, edges), bin_counts(cur_raw, edges))
    d_raw = stats.ks_2samp(ref_raw, cur_raw).statistic
    assert d_bin <= d_raw + 1e-12
    assert d_raw <= d_bin + bound + 1e-12


def test_chi_square_and_js_equal_scipy_on_categorical_counts():
    rng = np.random.default_rng(18)
    ref_raw = rng.choice(6, size=3000, p=[0.3, 0.25, 0.2, 0.1, 0.1, 0.05])
    cur_raw = rng.choice(6, size=800, p=[0.25, 0.25, 0.2, 0.15, 0.1, 0.05])
    feature = categorical_stats("c", ref_raw, 6)
    ref_counts = reference_counts(feature)
    cur_counts = np.bincount(cur_raw, minlength=6)
    statistic, p = chi_square_two_sample(ref_counts, cur_counts)
    expected = stats.chi2_contingency(np.vstack((ref_counts, cur_counts)), correction=False)
    assert statistic[0] == pytest.approx(expected.statistic, rel=1e-9)
    assert p[0] == pytest.approx(expected.pvalue, rel=1e-9)
    js = jensen_shannon_distance(ref_counts, cur_counts)
    assert js == pytest.approx(jensenshannon(ref_counts, cur_counts, base=2), rel=1e-9)
    report = evaluate({("y", "c"): feature}, {("y", "c"): cur_counts})
    assert report.features[0].test == "chi2"


def test_chi_square_pools_rare_categories():
    ref = np.array([500.0, 480.0, 15.0, 5.0])
    cur = np.array([50, 47, 2, 1])  # the last two expect < 5 in 100 rows: pooled, dof 2
    statistic, p = chi_square_two_sample(ref, cur)
    table = np.array([[500.0, 480.0, 20.0], [50, 47, 3]])
    expected = stats.chi2_contingency(table, correction=False)
    assert statistic[0] == pytest.approx(expected.statistic) and p[0] == pytest.approx(
        expected.pvalue
    )


def test_psi_is_finite_with_empty_bins_and_zero_for_equal_shares():
    ref = np.array([100.0, 100.0, 100.0, 100.0])
    assert population_stability_index(ref, ref) == pytest.approx(0.0)
    cur = np.array([0, 30, 30, 40])
    empty = population_stability_index(ref, cur)
    p, q = ref / ref.sum(), np.clip(cur / cur.sum(), 1e-4, None)  # Evidently's clip
    clipped = ((q - p) * np.log(q / p)).sum()
    assert np.isfinite(empty) and 0.0 < empty < clipped
    p, q = np.array([0.5, 0.5]), np.array([0.9, 0.1])
    psi = population_stability_index(p * 1e6, q * 1e6)  # smoothing vanishes at large counts
    assert psi == pytest.approx(((q - p) * np.log(q / p)).sum(), rel=1e-4)


def test_holm_matches_the_step_down_definition():
    p = np.array([0.01, 0.04, 0.03, np.nan, 0.005])
    adjusted = holm_adjust(p)
    assert np.isnan(adjusted[3])
    np.testing.assert_allclose(adjusted[[4, 0, 2, 1]], [0.02, 0.03, 0.06, 0.06])


def test_kll_sketched_feature_ks_within_rank_error_and_the_test_subtracts_it():
    from datasketches import kll_floats_sketch

    rng = np.random.default_rng(19)
    ref_raw, cur_raw = rng.normal(size=5000), rng.normal(0.05, 1.0, size=200_000)
    feature = numeric_stats("f", ref_raw)
    sketch = kll_floats_sketch(200)
    sketch.update(cur_raw.astype(np.float32))
    approx, eps = kll_histogram(sketch, feature.edges or ())
    exact = bin_counts(cur_raw.astype(np.float32).astype(np.float64), np.asarray(feature.edges))
    assert 0.0 < eps < 0.02
    d_sketch, _ = ks_binned(reference_counts(feature), approx)
    d_exact, _ = ks_binned(reference_counts(feature), exact)
    assert abs(d_sketch - d_exact) <= eps
    report = evaluate({("x", "f"): feature}, {("x", "f"): approx}, sketch_errors={("x", "f"): eps})
    (figures,) = report.features
    assert figures.sketch_error == eps
    assert figures.statistic == pytest.approx(max(d_sketch - eps, 0.0))


def test_sliding_reports_merge_windows_exactly():
    rng = np.random.default_rng(20)
    reference = _reference(rng, 5000)
    windows = [
        {k: rng.multinomial(60, np.asarray(f.frequencies)) for k, f in reference.items()}
        for _ in range(4)
    ]
    reports = sliding_reports(reference, windows, width=2)
    assert [r.features[0].rows for r in reports] == [60, 120, 120, 120]
    assert reports[0].status == "insufficient" and reports[1].evaluated == FEATURES


def test_sketch_error_subtraction_prevents_the_large_count_false_alarms_of_a_naive_ks():
    """No-drift data seen through KLL sketches: a KS that ignores the sketch's rank error
    (whylogs' failure) flags at large counts; subtracting it does not. PSI floor off, so
    the test alone decides."""
    from datasketches import kll_floats_sketch

    rng = np.random.default_rng(21)
    feature = numeric_stats("f", rng.normal(size=1_000_000))
    key = ("x", "f")
    pure_test = DriftThresholds(psi_floor=0.0)
    naive = honest = 0
    trials = 12
    for _ in range(trials):
        sketch = kll_floats_sketch(50)  # a small sketch: rank error ~5 %
        sketch.update(rng.normal(size=300_000).astype(np.float32))
        counts, eps = kll_histogram(sketch, feature.edges or ())
        naive += evaluate({key: feature}, {key: counts}, pure_test).status == "drift"
        flagged = evaluate({key: feature}, {key: counts}, pure_test, sketch_errors={key: eps})
        honest += flagged.status == "drift"
    assert honest == 0
    assert naive >= trials // 2  # the naive test is wrong most of the time


@pytest.mark.parametrize("rows", [200, 1_000_000])
def test_categorical_false_alarms_under_alpha_and_a_prior_shift_is_caught(rows):
    """predicted_class-like features: 10 classes with a rare one (pooled at small counts)."""
    rng = np.random.default_rng(22)
    truth = np.array([0.2, 0.15, 0.15, 0.1, 0.1, 0.1, 0.08, 0.07, 0.045, 0.005])
    trials, alarms = 200, 0
    for _ in range(trials // 20):  # a fresh 5,000-row reference, 20 windows against it
        feature = categorical_stats("c", rng.choice(10, size=5000, p=truth), 10)
        windows = rng.multinomial(rows, truth, size=20)
        alarms += sum(
            r.status == "drift" for r in evaluate_many({("y", "c"): feature}, {("y", "c"): windows})
        )
    assert alarms / trials <= _alarm_ceiling(trials)
    shifted = truth.copy()
    shifted[0], shifted[3] = 0.1, 0.2  # two classes swap their share
    report = evaluate({("y", "c"): feature}, {("y", "c"): rng.multinomial(rows, shifted)})
    assert report.status == "drift" and report.features[0].test == "chi2"
