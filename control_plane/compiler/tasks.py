"""Which task a model performs, when ``--task`` does not say: inferred, with the reason."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from edge_agent.core.manifest import Task


def infer_task(outputs: Mapping[str, np.ndarray], labels: np.ndarray | None) -> tuple[Task, str]:
    """(task, why) from the fp32 outputs on the validation set and the labels, if any."""
    first = next(iter(outputs.values()))
    rows = first.reshape(first.shape[0], -1).astype(np.float64)
    width = rows.shape[1]
    if labels is not None:
        integral = labels.dtype.kind in "iu" or bool(np.all(labels == np.round(labels)))
        if width > 1 and integral:
            return "classification", f"{width} output scores per row and integer labels"
        return "regression", "labels are real values" if not integral else "one output per row"
    if width == 1:
        return "regression", "one output value per row"
    norms = np.linalg.norm(rows, axis=1)
    if np.all(np.abs(norms - 1.0) < 1e-3):
        return "embedding", f"{width}-d output rows of unit length (normalised embeddings)"
    sums = rows.sum(axis=1)
    if np.all(rows >= 0) and np.all(np.abs(sums - 1.0) < 1e-3):
        return "classification", f"{width} output probabilities per row"
    if width >= 128:
        return (
            "embedding",
            f"{width}-d output rows without labels (pass --task classification if these "
            "are class scores)",
        )
    return (
        "classification",
        f"{width} output scores per row (pass --task embedding or regression if they are not)",
    )
