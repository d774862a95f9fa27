"""Compare a candidate's outputs with the fp32 reference's, against a budget (pure).

Each task kind has its own measure, read on the first output:

- classification: top-1 agreement with fp32 (and the accuracy delta with labels);
- regression: relative error, the mean |candidate - fp32| over the standard
  deviation of the fp32 outputs (and the MAE delta with labels);
- embedding: cosine similarity of each row to its fp32 vector (mean and 1st
  percentile) and nearest-neighbour agreement: the share of validation rows whose
  nearest other validation row (by cosine) is the same under both models.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from edge_agent.core.manifest import FidelityReport, MetricDelta, Task

if TYPE_CHECKING:
    from control_plane.core.hardware import Budgets

MEASURES: dict[str, str] = {
    "classification": "top-1 agreement",
    "regression": "relative error (MAE vs fp32 / std of fp32 outputs)",
    "embedding": "mean and 1st-percentile cosine, nearest-neighbour agreement",
}


def _accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    predicted = scores.reshape(scores.shape[0], -1).argmax(axis=1)
    return float((predicted == labels.reshape(-1)).mean())


def _mae(values: np.ndarray, labels: np.ndarray) -> float:
    return float(np.abs(values.reshape(labels.shape) - labels).mean())


def _unit(rows: np.ndarray) -> np.ndarray:
    flat = rows.reshape(rows.shape[0], -1).astype(np.float64)
    norms = np.linalg.norm(flat, axis=1, keepdims=True)
    unit: np.ndarray = flat / np.maximum(norms, 1e-12)
    return unit


def cosines(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Cosine similarity of each candidate row to its reference row."""
    found: np.ndarray = (_unit(reference) * _unit(candidate)).sum(axis=1)
    return found


def nearest_neighbours(rows: np.ndarray) -> np.ndarray:
    """Index of each row's nearest other row by cosine similarity."""
    unit = _unit(rows)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    found: np.ndarray = similarity.argmax(axis=1)
    return found


def nn_agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    return float((nearest_neighbours(reference) == nearest_neighbours(candidate)).mean())


def relative_error(reference: np.ndarray, candidate: np.ndarray) -> float:
    ref = reference.astype(np.float64)
    spread = float(ref.std()) or 1.0
    return float(np.abs(candidate.astype(np.float64) - ref).mean()) / spread


def fidelity_report(
    reference: Mapping[str, np.ndarray],
    candidate: Mapping[str, np.ndarray],
    task: Task,
    budgets: Budgets,
    labels: np.ndarray | None = None,
) -> FidelityReport:
    """Measure how far ``candidate`` strays from ``reference`` and whether it fits the budget.

    The task's measure is read on the first output; the error figures span every output.
    """
    first = next(iter(reference))
    rows = int(reference[first].shape[0])
    diffs = [
        np.abs(reference[name].astype(np.float64) - candidate[name].astype(np.float64))
        for name in reference
    ]
    max_abs = float(max(d.max() for d in diffs))
    mean_abs = float(np.mean([d.mean() for d in diffs]))
    reasons: list[str] = []
    if not np.isfinite(max_abs):
        reasons.append("candidate produced NaN or infinite outputs")

    figures: dict[str, float] = {}
    metric: MetricDelta | None = None
    ref_out, cand_out = reference[first], candidate[first]
    if task == "classification":
        ref_top = ref_out.reshape(rows, -1).argmax(axis=1)
        cand_top = cand_out.reshape(rows, -1).argmax(axis=1)
        agreement = figures["top1_agreement"] = float((ref_top == cand_top).mean())
        if agreement < 1.0 - budgets.max_top1_loss:
            reasons.append(
                f"top-1 agreement {agreement:.4f} below {1.0 - budgets.max_top1_loss:.4f} "
                f"(budget allows a loss of {budgets.max_top1_loss:g})"
            )
        if labels is not None:
            fp32, cand = _accuracy(ref_out, labels), _accuracy(cand_out, labels)
            metric = MetricDelta(name="accuracy", fp32=fp32, candidate=cand, delta=cand - fp32)
            if fp32 - cand > budgets.max_metric_drop:
                reasons.append(
                    f"accuracy {cand:.4f} is {fp32 - cand:.4f} below fp32 {fp32:.4f} "
                    f"(budget {budgets.max_metric_drop:g})"
                )
    elif task == "regression":
        rel = figures["relative_error"] = relative_error(ref_out, cand_out)
        limit = budgets.regression.max_relative_error
        if not rel <= limit:
            reasons.append(f"relative error {rel:.4g} above budget {limit:g}")
        if labels is not None:
            fp32, cand = _mae(ref_out, labels), _mae(cand_out, labels)
            metric = MetricDelta(name="mae", fp32=fp32, candidate=cand, delta=cand - fp32)
            if cand - fp32 > budgets.max_metric_drop * max(abs(fp32), 1e-12):
                reasons.append(
                    f"MAE {cand:.4g} is more than {budgets.max_metric_drop:.0%} above "
                    f"fp32 {fp32:.4g}"
                )
    else:
        cos = cosines(ref_out, cand_out)
        emb = budgets.embedding
        mean = figures["mean_cosine"] = float(np.nan_to_num(cos.mean(), nan=-1.0))
        p1 = figures["p1_cosine"] = float(np.nan_to_num(np.percentile(cos, 1), nan=-1.0))
        nn = figures["nn_agreement"] = nn_agreement(ref_out, cand_out) if rows > 2 else 1.0
        if mean < emb.min_mean_cosine:
            reasons.append(f"mean cosine {mean:.6f} below {emb.min_mean_cosine:g}")
        if p1 < emb.min_p1_cosine:
            reasons.append(f"1st-percentile cosine {p1:.6f} below {emb.min_p1_cosine:g}")
        if nn < emb.min_nn_agreement:
            reasons.append(f"nearest-neighbour agreement {nn:.4f} below {emb.min_nn_agreement:g}")
    if budgets.max_abs_error is not None and max_abs > budgets.max_abs_error:
        reasons.append(f"max abs error {max_abs:.4g} above budget {budgets.max_abs_error:g}")
    return FidelityReport(
        rows=rows,
        max_abs_error=max_abs if np.isfinite(max_abs) else 1e308,
        mean_abs_error=mean_abs if np.isfinite(mean_abs) else 1e308,
        metric=metric,
        passed=not reasons,
        reasons=tuple(reasons),
        task=task,
        measure=MEASURES[task],
        top1_agreement=figures.get("top1_agreement"),
        relative_error=figures.get("relative_error"),
        mean_cosine=figures.get("mean_cosine"),
        p1_cosine=figures.get("p1_cosine"),
        nn_agreement=figures.get("nn_agreement"),
    )


def shortfall(report: FidelityReport, task: Task, budgets: Budgets) -> float:
    """How far a report is from its budget (<= 0 within): the search's objective."""
    if task == "classification":
        return (1.0 - budgets.max_top1_loss) - (report.top1_agreement or 0.0)
    if task == "regression":
        return (report.relative_error or 0.0) - budgets.regression.max_relative_error
    emb = budgets.embedding
    return max(
        emb.min_mean_cosine - (report.mean_cosine or 0.0),
        (emb.min_nn_agreement - (report.nn_agreement or 0.0)) / 10.0,
        (emb.min_p1_cosine - (report.p1_cosine or 0.0)) / 5.0,
    )
