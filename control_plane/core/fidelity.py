"""Compare a candidate's outputs with the fp32 reference's, against a budget (pure)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from edge_agent.core.manifest import FidelityReport, MetricDelta, Task


def _accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    predicted = scores.reshape(scores.shape[0], -1).argmax(axis=1)
    return float((predicted == labels.reshape(-1)).mean())


def _mae(values: np.ndarray, labels: np.ndarray) -> float:
    return float(np.abs(values.reshape(labels.shape) - labels).mean())


def fidelity_report(
    reference: Mapping[str, np.ndarray],
    candidate: Mapping[str, np.ndarray],
    task: Task,
    *,
    max_top1_loss: float,
    max_metric_drop: float,
    max_abs_error: float | None = None,
    labels: np.ndarray | None = None,
) -> FidelityReport:
    """Measure how far ``candidate`` strays from ``reference`` and whether it fits the budget.

    Agreement and the metric are read on the first output; the error figures
    span every output.
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

    agreement: float | None = None
    metric: MetricDelta | None = None
    ref_out, cand_out = reference[first], candidate[first]
    if task == "classification":
        ref_top = ref_out.reshape(rows, -1).argmax(axis=1)
        cand_top = cand_out.reshape(rows, -1).argmax(axis=1)
        agreement = float((ref_top == cand_top).mean())
        if agreement < 1.0 - max_top1_loss:
            reasons.append(
                f"top-1 agreement {agreement:.4f} below {1.0 - max_top1_loss:.4f} "
                f"(budget allows a loss of {max_top1_loss:g})"
            )
        if labels is not None:
            fp32, cand = _accuracy(ref_out, labels), _accuracy(cand_out, labels)
            metric = MetricDelta(name="accuracy", fp32=fp32, candidate=cand, delta=cand - fp32)
            if fp32 - cand > max_metric_drop:
                reasons.append(
                    f"accuracy {cand:.4f} is {fp32 - cand:.4f} below fp32 {fp32:.4f} "
                    f"(budget {max_metric_drop:g})"
                )
    elif labels is not None:
        fp32, cand = _mae(ref_out, labels), _mae(cand_out, labels)
        metric = MetricDelta(name="mae", fp32=fp32, candidate=cand, delta=cand - fp32)
        if cand - fp32 > max_metric_drop * max(abs(fp32), 1e-12):
            reasons.append(
                f"MAE {cand:.4g} is more than {max_metric_drop:.0%} above fp32 {fp32:.4g}"
            )
    if max_abs_error is not None and max_abs > max_abs_error:
        reasons.append(f"max abs error {max_abs:.4g} above budget {max_abs_error:g}")
    return FidelityReport(
        rows=rows,
        max_abs_error=max_abs if np.isfinite(max_abs) else 1e308,
        mean_abs_error=mean_abs if np.isfinite(mean_abs) else 1e308,
        top1_agreement=agreement,
        metric=metric,
        passed=not reasons,
        reasons=tuple(reasons),
    )
