"""How tensors are cut into features and values into reference bins.

Shared by the compiler (which computes reference statistics) and the device
(which counts live traffic on the same bins), so both cut identically.

- ``element``: every element of a row is a feature (small inputs, tabular data).
- ``channel``: for large inputs of rank >= 3 (images), feature c is the row's
  mean over all axes but the channel axis (axis 1).
- ``class``: for classifier outputs, the predicted class (argmax) and the top score.
- ``tokens``: for integer id sequences (token ids), per row the sequence length
  (ids other than the padding id), the share of padding and, when the unknown
  id is known, the share of unknown ids.
- ``mask``: for attention masks (0/1 or bool), per row the number of positions set.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

FeatureAxis = Literal["element", "channel", "class", "tokens", "mask"]
MAX_ELEMENT_FEATURES = 256
_FLOAT32 = np.dtype(np.float32)


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
        result: np.ndarray = channel_sums(array).astype(np.float64) / channel_size(array)
        return result
    if axis == "mask":
        return mask_features(array)
    if axis == "tokens":
        return token_features(array, 0, None)
    raise ValueError(f"feature axis {axis!r} does not apply to inputs")


@np.errstate(over="ignore", invalid="ignore")  # inf/NaN inputs give inf/NaN, quietly
def channel_sums(array: np.ndarray) -> np.ndarray:
    """(batch, channels) sums over all axes but the channel axis (axis 1).

    float32 input is summed pairwise in float32 (SIMD; ``mean(dtype=...)`` takes
    a slower casting path), anything else in float64. The ``channel`` feature is
    these sums, in float64, divided by :func:`channel_size`: compiler and device
    both compute it from here, so they agree exactly (the device divides a
    buffer of sums at once, which gives the same float64 quotients).
    """
    rows = array.reshape(array.shape[0], array.shape[1], -1)
    if rows.dtype is _FLOAT32 or rows.dtype == np.float32:  # `is`: the usual, cheapest check
        sums: np.ndarray = np.add.reduce(rows, axis=2)
    else:
        sums = np.add.reduce(rows, axis=2, dtype=np.float64)
    return sums


def channel_size(array: np.ndarray) -> int:
    """How many elements one channel of one row holds (the divisor of the channel means)."""
    per_row = array.shape[0] * array.shape[1]
    return array.size // per_row if per_row else 1


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


def token_features(array: np.ndarray, pad_id: int, unknown_id: int | None) -> np.ndarray:
    """(batch, 2 or 3) float64: sequence length, padding share[, unknown-id share]."""
    rows = array.reshape(array.shape[0], -1)
    width = max(rows.shape[1], 1)
    pads = np.count_nonzero(rows == pad_id, axis=1)
    columns = [(width - pads).astype(np.float64), pads / width]
    if unknown_id is not None:
        columns.append(np.count_nonzero(rows == unknown_id, axis=1) / width)
    stacked: np.ndarray = np.column_stack(columns).astype(np.float64)
    return stacked


def mask_features(array: np.ndarray) -> np.ndarray:
    """(batch, 1) float64: how many positions of each row's mask are set."""
    rows = array.reshape(array.shape[0], -1)
    counts: np.ndarray = np.count_nonzero(rows, axis=1).astype(np.float64)
    return counts[:, np.newaxis]
