"""Reference statistics of a model's inputs and outputs (pure numpy).

They travel in the package manifest so that drift can be measured later
against fixed bins, on the device and at the control plane alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from edge_agent.core.bins import (
    FeatureAxis,
    bin_counts,
    choose_feature_axis,
    class_features,
    feature_matrix,
    mask_features,
    quantile_edges,
    token_features,
)
from edge_agent.core.manifest import FeatureStats, ReferenceStats, Task, TensorStats

DEFAULT_BINS = 10
MAX_CATEGORIES = 64  # integer inputs with at most this many codes are categorical


def numeric_stats(name: str, values: np.ndarray, bins: int = DEFAULT_BINS) -> FeatureStats:
    edges = quantile_edges(values, bins)
    counts = bin_counts(values, edges)
    total = max(int(counts.sum()), 1)
    return FeatureStats(
        name=name,
        kind="numeric",
        count=int(values.size),
        edges=tuple(float(e) for e in edges),
        frequencies=tuple(float(c) / total for c in counts),
        mean=float(values.mean()),
        std=float(values.std()),
        min=float(values.min()),
        max=float(values.max()),
    )


def categorical_stats(name: str, values: np.ndarray, categories: int) -> FeatureStats:
    counts = np.bincount(values.astype(np.int64), minlength=categories)[:categories]
    total = max(int(counts.sum()), 1)
    return FeatureStats(
        name=name,
        kind="categorical",
        count=int(values.size),
        categories=tuple(range(categories)),
        frequencies=tuple(float(c) / total for c in counts),
    )


def _feature_names(
    tensor: str, count: int, axis: FeatureAxis, given: Sequence[str] | None
) -> list[str]:
    if given is not None and len(given) == count:
        return list(given)
    label = "c" if axis == "channel" else ""
    return [f"{tensor}[{label}{i}]" for i in range(count)]


def integer_kind(name: str, array: np.ndarray) -> str:
    """How an integer or boolean input is summarised: ``mask``, ``tokens`` or ``categorical``.

    A boolean tensor, or a 0/1 tensor whose name says mask, is a mask; an integer
    tensor with few distinct non-negative codes is categorical (per element); any
    other integer tensor of rank >= 2 is a sequence of ids.
    """
    values = np.unique(array)
    if array.dtype == np.bool_ or ("mask" in name.lower() and np.isin(values, (0, 1)).all()):
        return "mask"
    small = values.size <= MAX_CATEGORIES and values.min() >= 0 and values.max() < MAX_CATEGORIES
    width = int(np.prod(array.shape[1:])) if array.ndim > 1 else 1
    if small and width <= 16:
        return "categorical"
    return "tokens" if array.ndim >= 2 else "categorical"


def integer_input_stats(
    name: str, array: np.ndarray, unknown_id: int | None = None, pad_id: int = 0
) -> TensorStats:
    kind = integer_kind(name, array)
    if kind == "mask":
        return TensorStats(
            tensor=name,
            feature_axis="mask",
            features=(numeric_stats("length", mask_features(array)[:, 0]),),
        )
    if kind == "tokens":
        matrix = token_features(array, pad_id, unknown_id)
        labels = ["length", "padding_share", "unknown_share"][: matrix.shape[1]]
        return TensorStats(
            tensor=name,
            feature_axis="tokens",
            features=tuple(numeric_stats(n, matrix[:, i]) for i, n in enumerate(labels)),
            pad_id=pad_id,
            unknown_id=unknown_id,
        )
    matrix = array.reshape(array.shape[0], -1).astype(np.int64)
    categories = max(int(matrix.max()) + 1, 1)
    names = _feature_names(name, matrix.shape[1], "element", None)
    return TensorStats(
        tensor=name,
        feature_axis="element",
        features=tuple(
            categorical_stats(n, matrix[:, i], min(categories, MAX_CATEGORIES))
            for i, n in enumerate(names)
        ),
    )


def input_stats(
    name: str,
    array: np.ndarray,
    feature_names: Sequence[str] | None = None,
    unknown_id: int | None = None,
) -> TensorStats:
    if array.dtype.kind in "iub":
        return integer_input_stats(name, array, unknown_id)
    axis = choose_feature_axis(tuple(array.shape[1:]))
    matrix = feature_matrix(array, axis)
    names = _feature_names(name, matrix.shape[1], axis, feature_names)
    features = tuple(numeric_stats(n, matrix[:, i]) for i, n in enumerate(names))
    return TensorStats(tensor=name, feature_axis=axis, features=features)


def output_stats(name: str, array: np.ndarray, task: Task) -> TensorStats:
    if task == "classification":
        predicted, top = class_features(array)
        classes = int(np.prod(array.shape[1:]))
        return TensorStats(
            tensor=name,
            feature_axis="class",
            features=(
                categorical_stats("predicted_class", predicted, classes),
                numeric_stats("top_score", top),
            ),
        )
    matrix = feature_matrix(array, "element")
    names = _feature_names(name, matrix.shape[1], "element", None)
    return TensorStats(
        tensor=name,
        feature_axis="element",
        features=tuple(numeric_stats(n, matrix[:, i]) for i, n in enumerate(names)),
    )


def reference_statistics(
    inputs: Mapping[str, np.ndarray],
    outputs: Mapping[str, np.ndarray],
    task: Task,
    source: str,
    feature_names: Mapping[str, Sequence[str]] | None = None,
    unknown_id: int | None = None,
) -> ReferenceStats:
    names = feature_names or {}
    rows = next(iter(inputs.values())).shape[0]
    return ReferenceStats(
        rows=int(rows),
        source=source,
        inputs=tuple(input_stats(n, a, names.get(n), unknown_id) for n, a in inputs.items()),
        outputs=tuple(output_stats(n, a, task) for n, a in outputs.items()),
    )
