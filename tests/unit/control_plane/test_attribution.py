"""Attribution drift: SHAP rankings of a real model, quiet on fresh data from the same
distribution, flagged when the data or the model changes what the prediction relies on."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from control_plane.core.attribution import (
    AttributionThresholds,
    additivity_error,
    budget_pick,
    judge,
    window_start,
)
from control_plane.monitoring.explain import ExplainBudget, ShapExplainer

NAMES = [f"f{i}" for i in range(8)]
BUDGET = ExplainBudget(max_rows=16, nsamples=128, background=16)


def _model(weights: np.ndarray, seed: int) -> tuple[LogisticRegression, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(3000, 8))
    y = (x @ weights + 0.3 * rng.normal(size=3000) > 0).astype(int)
    return LogisticRegression().fit(x, y), x


@pytest.fixture(scope="module")
def reference():
    """A model relying on f0 > f1 > f2 (the rest is noise) and its reference attributions."""
    model, x = _model(np.array([3.0, 2.0, 1.0, 0, 0, 0, 0, 0]), 0)
    explainer = ShapExplainer(model.predict_proba, x[:500], NAMES, BUDGET)
    attr = explainer.explain(x[1000:1016])
    return model, x, explainer, attr.mean_abs(), len(attr.values)


def test_fresh_windows_from_the_same_distribution_stay_quiet(reference):
    model, x, explainer, ref, ref_rows = reference
    rng = np.random.default_rng(7)
    statuses = []
    for _ in range(4):
        window = rng.normal(size=(16, 8))
        attr = explainer.explain(window)
        np.testing.assert_array_less(
            additivity_error(attr.values, attr.base_values, attr.predictions), 1e-6
        )
        statuses.append(judge(ref, ref_rows, attr.mean_abs(), len(attr.values)).status)
    assert statuses == ["no_drift"] * 4


def test_a_stuck_sensor_on_the_top_feature_is_attribution_drift(reference):
    model, x, explainer, ref, ref_rows = reference
    window = np.random.default_rng(8).normal(size=(16, 8))
    window[:, 0] = x[:500, 0].mean()  # f0 reads its mean, whatever happens
    verdict = judge(ref, ref_rows, explainer.explain(window).mean_abs(), 16)
    assert verdict.status == "drift" and verdict.drift is not None
    assert "f0" in verdict.drift.left_top_k or verdict.drift.current_top[0] != "f0"
    assert verdict.reasons


def test_a_model_relying_on_other_features_is_attribution_drift(reference):
    _, x, _, ref, ref_rows = reference
    other, _ = _model(np.array([0, 0, 0, 0, 0, 3.0, 2.0, 1.0]), 1)
    explainer = ShapExplainer(other.predict_proba, x[:500], NAMES, BUDGET)
    current = explainer.explain(np.random.default_rng(9).normal(size=(16, 8))).mean_abs()
    verdict = judge(ref, ref_rows, current, 16)
    assert verdict.status == "drift" and verdict.drift is not None
    assert verdict.drift.top_k_overlap < 0.6 and verdict.drift.current_top[0] == "f5"


def test_too_few_explained_rows_is_insufficient_never_no_drift(reference):
    _, _, _, ref, ref_rows = reference
    verdict = judge(ref, ref_rows, ref, 3, AttributionThresholds(min_rows=8))
    assert verdict.status == "insufficient" and verdict.drift is None
    assert "at least 8" in verdict.reasons[0]


def test_the_budget_pick_is_reproducible_and_bounded():
    ids = [f"p-{i}" for i in range(100)]
    picked = budget_pick(ids, 16)
    assert len(picked) == 16 and len(set(picked)) == 16
    assert budget_pick(list(reversed(ids)), 16) == picked  # order of arrival does not matter
    assert picked != ids[:16]  # not simply the first captures
    assert budget_pick(ids[:5], 16) == budget_pick(ids[:5], 99)
    assert window_start(7199.0, 3600.0) == 3600.0
