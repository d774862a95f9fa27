"""How tensors are cut into features and values into reference bins.

Shared by the compiler (which computes reference statistics) and the device
(which counts live traffic on the same bins), so both cut identically.

- ``element``: every element of a row is a feature (small inputs, tabular data).
- ``channel``: for large inputs of rank >= 3 (images), feature c is the row's
  mean over all axes but the channel axis (axis 1).
- ``class``: for classifier outputs, the predicted class (argmax) and the top score.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

FeatureAxis = Literal["element", "channel", "class"]
MAX_ELEMENT_FEATURES = 256


def choose_feature_axis(row_shape: tuple[int, ...]) -> FeatureAxis:
    size = int(np.prod(row_shape)) if row_shape else 1
    if size <= MAX_ELEMENT_FEATURES or len(row_shape) < 2:
        return "element"
    return "channel"


def feature_matrix(array: np.ndarray, axis: FeatureAxis) -> np.ndarray:
    """(batch, features) float64 view of a batch, cut the way ``axis`` says."""
    batch = array.shape[0]
    if axis == "element":
        return array.reshape(batch, -1).astype(np.float64, copy=False)
    if axis == "channel":
        # float32 pairwise sums (SIMD; ``mean(dtype=...)`` takes a slower casting path),
        # divided in float64. Compiler and device both call this, so they agree exactly.
        rows = array.reshape(batch, array.shape[1], -1)
        with np.errstate(over="ignore", invalid="ignore"):  # inf/NaN inputs give inf/NaN
            if array.dtype == np.float32:
                sums = np.add.reduce(rows, axis=2).astype(np.float64)
            else:
                sums = np.add.reduce(rows, axis=2, dtype=np.float64)
        result: np.ndarray = sums / rows.shape[2]
        return result
    raise ValueError(f"feature axis {axis!r} does not apply to inputs")


def class_features(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(predicted class, top score) of each row of classifier outputs."""
    flat = scores.reshape(scores.shape[0], -1)
    return flat.argmax(axis=1), flat.max(axis=1).astype(np.float64)


def quantile_edges(values: np.ndarray, bins: int) -> np.ndarray:
    """Edges of up to ``bins`` equal-mass bins; fewer when values repeat."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.array([0.0, 0.0])
    edges = np.unique(np.quantile(finite, np.linspace(0.0, 1.0, bins + 1)))
    if edges.size == 1:
        edges = np.array([edges[0], edges[0]])
    return edges


def bin_indices(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each value; the outer bins are open, so every finite value lands in one."""
    inner = edges[1:-1]
    return np.searchsorted(inner, values, side="right")


def bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    nbins = max(edges.size - 1, 1)
    return np.bincount(bin_indices(values, edges), minlength=nbins)[:nbins]
