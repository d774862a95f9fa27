"""Per-feature attributions of captured predictions with the ``shap`` package.

Model-agnostic over a predict callable ``(rows, features) -> (rows, outputs)``:
the package's own runtime (:func:`runtime_predict` wraps an
``edge_agent.runtime`` loaded model) or any Python callable (the fp32 source
model when the control plane has it).

Kernel SHAP (``shap.KernelExplainer``) is used: its weighted regression is
constrained so that, for every explained row, the attributions sum to the
prediction minus the base value (the mean prediction over the background);
it needs no numba JIT (the permutation explainer's first call costs ~10 s
here) and its cost is explicit: each explained row costs ``nsamples`` x
``background`` model rows. :class:`ExplainBudget` caps all three, so a
window's explanation costs at most ``max_rows * nsamples * background``
predictions; the next session runs it in the background per window.

Attribution drift: the mean |SHAP| per feature of a window against a
reference's, by Spearman rank correlation and top-k overlap
(:func:`attribution_drift`): the ranking of what the model relies on changed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from control_plane.core.attribution import AttributionDrift, attribution_drift

__all__ = [
    "AttributionDrift",
    "Attributions",
    "ExplainBudget",
    "ShapExplainer",
    "attribution_drift",
    "runtime_predict",
]

logger = logging.getLogger(__name__)

PredictFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class ExplainBudget:
    """Caps on one window's explanation cost."""

    max_rows: int = 16  # captured rows explained per window
    nsamples: int = 256  # coalitions per row (Kernel SHAP)
    background: int = 32  # reference rows (k-means summary) the masked features take
    max_features: int | None = 10  # non-zero attributions per row (shap's default
    # "num_features(10)" L1 selection when the coalitions do not enumerate every subset);
    # None: every feature gets a value (noisier with few coalitions, see benchmarks/explain)


@dataclass(frozen=True)
class Attributions:
    """SHAP values of explained rows for one output each."""

    feature_names: tuple[str, ...]
    values: np.ndarray  # (rows, features)
    base_values: np.ndarray  # (rows,)
    predictions: np.ndarray  # (rows,) the explained output's value
    outputs: np.ndarray  # (rows,) which output was explained
    skipped_rows: int  # rows over the budget, not explained

    def mean_abs(self) -> dict[str, float]:
        """Mean |SHAP| per feature (the per-window aggregate)."""
        means = (
            np.abs(self.values).mean(axis=0)
            if len(self.values)
            else np.zeros(len(self.feature_names))
        )
        return {n: float(v) for n, v in zip(self.feature_names, means, strict=True)}


def runtime_predict(model: Any, input_name: str, output_name: str) -> PredictFn:
    """A predict callable over an ``edge_agent.runtime`` loaded model (float32 inputs)."""

    def predict(rows: np.ndarray) -> np.ndarray:
        out = model.predict({input_name: np.asarray(rows, dtype=np.float32)})[output_name]
        return np.asarray(out, dtype=np.float64).reshape(len(rows), -1)

    return predict


class ShapExplainer:
    """Kernel SHAP over a predict callable, within an :class:`ExplainBudget`."""

    def __init__(
        self,
        predict: PredictFn,
        background: np.ndarray,
        feature_names: Sequence[str],
        budget: ExplainBudget | None = None,
        seed: int = 0,
    ) -> None:
        import shap  # heavy: imported when an explainer is built

        self.budget = budget or ExplainBudget()
        self.feature_names = tuple(feature_names)
        self._predict = predict
        background = np.asarray(background, dtype=np.float64)
        if len(background) > self.budget.background:
            summary = shap.kmeans(background, self.budget.background)
        else:
            summary = background
        self._seed = seed
        self._explainer = shap.KernelExplainer(self._predict_2d, summary, silent=True)

    def _predict_2d(self, rows: np.ndarray) -> np.ndarray:
        out = np.asarray(self._predict(rows), dtype=np.float64)
        return out.reshape(len(rows), -1)

    def explain(
        self, rows: np.ndarray, output: int | Literal["predicted"] = "predicted"
    ) -> Attributions:
        """Attributions of up to ``budget.max_rows`` rows for ``output`` (or each row's argmax)."""
        rows = np.asarray(rows, dtype=np.float64)
        kept = rows[: self.budget.max_rows]
        state = np.random.get_state()  # KernelExplainer samples with numpy's global RNG
        np.random.seed(self._seed)
        try:
            l1: str | bool = (
                False
                if self.budget.max_features is None
                else f"num_features({self.budget.max_features})"
            )
            raw = self._explainer.shap_values(
                kept, nsamples=self.budget.nsamples, silent=True, l1_reg=l1
            )
        finally:
            np.random.set_state(state)
        values = np.asarray(raw, dtype=np.float64)
        if values.ndim == 2:  # single output
            values = values[:, :, np.newaxis]
        base = np.asarray(self._explainer.expected_value, dtype=np.float64).reshape(-1)
        # One row per call, as Kernel SHAP evaluates f(x): a dynamically quantized package
        # scales activations per batch, so the same row scores differently in a batch of 4.
        scores = np.vstack([self._predict_2d(kept[i : i + 1]) for i in range(len(kept))])
        chosen = scores.argmax(axis=1) if output == "predicted" else np.full(len(kept), output)
        index = np.arange(len(kept))
        return Attributions(
            feature_names=self.feature_names,
            values=values[index, :, chosen],
            base_values=base[chosen],
            predictions=scores[index, chosen],
            outputs=chosen,
            skipped_rows=len(rows) - len(kept),
        )
