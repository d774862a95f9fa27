"""Telemetry sketches of one model's traffic, updated on every prediction (no I/O).

Per window: request, row, error and invalid-request counts; a KLL latency
sketch (Apache DataSketches, mergeable, ~2 KB, rank error ~1.3 % at k=200);
per-feature counts of every input and output on the manifest's reference bins,
cut exactly as :mod:`edge_agent.core.bins` cuts them at compile time; and
optional sampled captures (inputs, outputs, prediction id), at most
``max_captures`` per window. Memory is fixed by the manifest and the config,
not by the traffic.

Bin counting is one vectorised pass per tensor: features are stacked into a
(batch, features) matrix, compared against a padded (features, edges) matrix
of inner edges, and counted with a single ``np.bincount``. The result equals
``bins.bin_counts`` feature by feature (NaN lands in the top bin, as with
``np.searchsorted``).
"""

from __future__ import annotations

import base64
import itertools
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from edge_agent.core.bins import (
    channel_sums,
    class_features,
    feature_matrix,
    mask_features,
    token_features,
)

if TYPE_CHECKING:
    from datasketches import kll_floats_sketch

    from edge_agent.core.device_manifest import AnyFeatureStats, AnyManifest, AnyTensorStats

FailureKind = Literal["invalid", "error"]
QUANTILES = (0.5, 0.95, 0.99)
LATENCY_BATCH = 256


@dataclass(frozen=True)
class TelemetryConfig:
    """How much a window keeps besides its fixed-size sketches."""

    capture_rate: float = 0.0
    max_captures: int = 16
    max_capture_rows: int = 4
    max_capture_elements: int = 4096
    max_capture_tensors: int = 16
    """Tensors kept per capture (inputs and outputs each); the rest are left out."""
    max_capture_bytes: int = 1024 * 1024
    """Estimated JSON bytes of all captures in one window; a capture past it is dropped."""
    kll_k: int = 200


def _inner_edges(feature: AnyFeatureStats) -> np.ndarray:
    if feature.kind == "categorical":
        cats = np.asarray(feature.categories or (0,), dtype=np.float64)
        return (cats[:-1] + cats[1:]) / 2.0
    edges = np.asarray(feature.edges or (0.0, 0.0), dtype=np.float64)
    return edges[1:-1]


class TensorBinner:
    """Counts one tensor's features on their reference bins (stateless, vectorised)."""

    def __init__(self, stats: AnyTensorStats) -> None:
        self.stats = stats
        # :meth:`partial_rows` without the method call, for the per-call loops
        self.partial_rows_of: Callable[[np.ndarray], np.ndarray] = (
            channel_sums
            if stats.feature_axis == "channel"
            else mask_features
            if stats.feature_axis == "mask"
            else self._token_rows
            if stats.feature_axis == "tokens"
            else self._flat_rows
        )
        inner = [_inner_edges(f) for f in stats.features]
        width = max((e.size for e in inner), default=0)
        self._inner = np.full((len(inner), max(width, 1)), np.inf)
        for i, edges in enumerate(inner):
            self._inner[i, : edges.size] = edges
        self._width = self._inner.shape[1]
        self._top = np.array([e.size for e in inner], dtype=np.int64)
        nbins = self._top + 1
        self.offsets = np.concatenate(([0], np.cumsum(nbins)[:-1])).astype(np.int64)
        self.nbins = nbins
        self.total = int(nbins.sum())

    def rows(self, array: np.ndarray) -> np.ndarray:
        """What a call contributes, one row per example: features, or raw scores for ``class``."""
        if self.stats.feature_axis == "class":
            return array.reshape(array.shape[0], -1)
        if self.stats.feature_axis == "tokens":
            return self._token_rows(array)
        return feature_matrix(array, self.stats.feature_axis)

    def _token_rows(self, array: np.ndarray) -> np.ndarray:
        pad = self.stats.pad_id if self.stats.pad_id is not None else 0
        return token_features(array, pad, self.stats.unknown_id)

    def partial_rows(self, array: np.ndarray) -> np.ndarray:
        """:meth:`rows` as a call buffers them, (batch, features): ``channel`` features
        as sums, still to be divided by the channel size (``array.size // rows.size``,
        1 for the other axes), ``element`` features in the input's own dtype (the
        float64 buffer widens them exactly as ``rows`` would)."""
        return self.partial_rows_of(array)

    @staticmethod
    def _flat_rows(array: np.ndarray) -> np.ndarray:
        return array if array.ndim == 2 else array.reshape(array.shape[0], -1)

    def feature_values(self, rows: np.ndarray) -> np.ndarray:
        if self.stats.feature_axis == "class":
            predicted, top = class_features(rows)
            return np.column_stack((predicted.astype(np.float64), top))
        return rows

    def counts(self, array: np.ndarray) -> np.ndarray | None:
        """Counts per (feature, bin) of a batch, flattened; None if it does not fit the stats."""
        return self.count_rows(self.rows(array))

    def count_rows(self, rows: np.ndarray) -> np.ndarray | None:
        values = self.feature_values(rows)
        if values.ndim != 2 or values.shape[1] != self._top.size:
            return None
        below = (values[:, :, np.newaxis] < self._inner).sum(axis=2)
        index = np.minimum(self._width - below, self._top) + self.offsets
        return np.bincount(index.ravel(), minlength=self.total)

    def split(self, counts: np.ndarray) -> list[dict[str, Any]]:
        features: tuple[AnyFeatureStats, ...] = self.stats.features
        return [
            {"name": f.name, "kind": f.kind, "counts": counts[o : o + n].tolist()}
            for f, o, n in zip(features, self.offsets, self.nbins, strict=True)
        ]


class TensorCounter:
    """Per-call rows are buffered and binned ``capacity`` rows at a time.

    A call costs one copy into the buffer; the division of channel sums into
    means, the comparison and the bincount run once per buffer, so their fixed
    numpy cost is shared by many calls. Small calls (at most ``SMALL_ROWS``
    values: a batch-1 image's channel sums, a class score vector) are kept as
    Python floats: ``tolist`` is cheaper than a numpy assignment once a large
    model's run has pushed numpy's code out of the CPU caches, and the values
    (float32 widened to float64) are the ones the numpy buffer would hold; the
    list stays under ~150 KB. Not thread-safe: :class:`ModelTelemetry` holds
    its lock around it.
    """

    SMALL_ROWS = 16

    def __init__(self, binner: TensorBinner, capacity: int = 256) -> None:
        self.binner = binner
        self.capacity = capacity
        self.counts = np.zeros(binner.total, dtype=np.int64)
        self.mismatched = 0
        self._channel = binner.stats.feature_axis == "channel"
        self._features = -1  # the width of the buffered rows
        self._divisor = 1
        self._buffer: np.ndarray | None = None
        self._fill = 0
        self._small: list[list[float]] = []
        self._small_rows = 0

    def add(self, array: np.ndarray, rows: np.ndarray | None = None) -> None:
        """Count a tensor; ``rows``, if given, are ``binner.partial_rows(array)``."""
        if rows is None:
            rows = self.binner.partial_rows_of(array)
        batch, features = rows.shape
        size = batch * features
        # the channel size, or 1 (only channel rows are sums still to be divided)
        divisor = (array.size // size if size else 1) if self._channel else 1
        if (
            size <= self.SMALL_ROWS
            and features == self._features
            and divisor == self._divisor
            and self._small_rows < self.capacity
        ):  # the usual call, inline
            self._small += rows.tolist()
            self._small_rows += batch
            return
        self.add_rows(rows, divisor)

    def add_rows(self, rows: np.ndarray, divisor: int = 1) -> None:
        """Add (batch, features) rows; with ``divisor`` they are sums still to be divided by it."""
        batch, features = rows.shape
        if features != self._features or divisor != self._divisor:
            self.flush()
            self._features = features
            self._divisor = divisor
            self._buffer = None
        if batch * features <= self.SMALL_ROWS:
            if self._small_rows >= self.capacity:
                self._flush_small()
            self._small += rows.tolist()
            self._small_rows += batch
            return
        buffer = self._buffer
        if buffer is None:
            buffer = self._buffer = np.empty((self.capacity, features), np.float64)
        if self._fill + batch > self.capacity:
            self._flush_buffer()
            if batch > self.capacity:
                self._count(rows)
                return
        buffer[self._fill : self._fill + batch] = rows
        self._fill += batch

    def _count(self, rows: np.ndarray) -> None:
        if self._divisor != 1:  # the float64 quotients feature_matrix computes, row for row
            rows = rows.astype(np.float64) / self._divisor
        counts = self.binner.count_rows(rows)
        if counts is None:
            self.mismatched += rows.shape[0]
        else:
            self.counts += counts

    def _flush_buffer(self) -> None:
        if self._buffer is not None and self._fill:
            self._count(self._buffer[: self._fill])
        self._fill = 0

    def _flush_small(self) -> None:
        if self._small_rows:
            self._count(np.array(self._small, dtype=np.float64))
        self._small = []
        self._small_rows = 0

    def flush(self) -> None:
        self._flush_buffer()
        self._flush_small()

    def take(self) -> np.ndarray:
        """The counts so far (buffers included); the counter starts again from zero."""
        self.flush()
        counts, self.counts = self.counts, np.zeros_like(self.counts)
        return counts


def new_sketch(k: int) -> kll_floats_sketch:
    """A KLL latency sketch; datasketches is imported on first use, not on a cold start's path
    (latencies wait in a list until LATENCY_BATCH calls or the window's close)."""
    from datasketches import kll_floats_sketch

    return kll_floats_sketch(k)


@dataclass
class _Window:
    started_at: float
    k: int
    requests: int = 0
    rows: int = 0
    errors: int = 0
    invalid: int = 0
    latency: kll_floats_sketch | None = None
    captures: list[dict[str, Any]] = field(default_factory=list)
    captures_dropped: int = 0
    capture_bytes: int = 0
    # latencies (ms) not yet in the sketch: one vectorised sketch update per
    # LATENCY_BATCH calls instead of one extension call per call
    pending_ms: list[float] = field(default_factory=list)

    def flush_latency(self) -> kll_floats_sketch:
        """The sketch with every latency so far (same values, same order as one by one)."""
        if self.latency is None:
            self.latency = new_sketch(self.k)
        if self.pending_ms:
            self.latency.update(np.array(self.pending_ms, dtype=np.float32))
            self.pending_ms = []
        return self.latency


@dataclass(frozen=True)
class HealthStats:
    """Cumulative traffic of one loaded model, for the health watch."""

    requests: int
    failures: int
    latency_ms_p95: float | None

    @property
    def error_rate(self) -> float:
        return self.failures / self.requests if self.requests else 0.0


def _latency_summary(sketch: kll_floats_sketch) -> dict[str, Any]:
    if sketch.is_empty():
        return {"count": 0, "p50": None, "p95": None, "p99": None, "kll": None}
    p50, p95, p99 = sketch.get_quantiles(list(QUANTILES))
    return {
        "count": int(sketch.n),
        "p50": float(p50),
        "p95": float(p95),
        "p99": float(p99),
        "max": float(sketch.get_max_value()),
        "kll": base64.b64encode(sketch.serialize()).decode("ascii"),
    }


def _histograms(binner: TensorBinner, counts: np.ndarray) -> dict[str, Any]:
    stats = binner.stats
    return {
        "tensor": stats.tensor,
        "feature_axis": stats.feature_axis,
        "features": binner.split(counts),
    }


def _capturable(array: np.ndarray, rows: int, limit: int) -> list[Any] | None:
    part = array[:rows]
    return part.tolist() if part.size <= limit else None


def _captured(
    tensors: Mapping[str, np.ndarray], cfg: TelemetryConfig
) -> tuple[dict[str, list[Any] | None], int]:
    """The tensors a capture keeps (capped in count, rows and elements) and their JSON estimate.

    The estimate is an upper bound: 24 bytes per element (a float's repr and a
    separator) plus the name.
    """
    kept: dict[str, list[Any] | None] = {}
    estimate = 0
    for name, array in itertools.islice(tensors.items(), cfg.max_capture_tensors):
        kept[name] = value = _capturable(array, cfg.max_capture_rows, cfg.max_capture_elements)
        estimate += len(name) + 8
        if value is not None:
            estimate += 24 * min(array[: cfg.max_capture_rows].size, cfg.max_capture_elements)
    return kept, estimate


class ModelTelemetry:
    """Thread-safe window sketches of one model; the caller closes windows on its timer."""

    def __init__(
        self,
        manifest: AnyManifest,
        config: TelemetryConfig | None = None,
        clock: Callable[[], float] = time.time,
        seed: int | None = None,
    ) -> None:
        self.manifest = manifest
        self.config = config or TelemetryConfig()
        self._clock = clock
        self._lock = threading.Lock()
        self._random = random.Random(seed).random  # ~30 ns a draw, numpy's takes ~300
        self._capture_rate = self.config.capture_rate
        self._inputs = {s.tensor: TensorCounter(TensorBinner(s)) for s in manifest.reference.inputs}
        self._outputs = {
            s.tensor: TensorCounter(TensorBinner(s)) for s in manifest.reference.outputs
        }
        # per-call loops run over these tuples (no dict views, no attribute chains)
        self._input_rows = tuple((n, c.binner.partial_rows_of) for n, c in self._inputs.items())
        self._input_adds = tuple((n, c.add) for n, c in self._inputs.items())
        self._output_adds = tuple((n, c.add) for n, c in self._outputs.items())
        self._ids = itertools.count(1)
        self._id_prefix = f"{os.urandom(4).hex()}-"
        self._window = self._new_window()
        self._life_requests = 0
        self._life_failures = 0
        self._life_latency: kll_floats_sketch | None = None  # closed windows' latencies

    def _new_window(self) -> _Window:
        return _Window(started_at=self._clock(), k=self.config.kll_k)

    def next_prediction_id(self) -> str:
        return f"{self._id_prefix}{next(self._ids):x}"

    def input_rows(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The inputs' feature rows (channel features as sums, not yet divided into
        means: finite exactly when the means are); compute them right after
        validation, while the inputs are still in cache (a large model's run evicts
        them), and pass them to :meth:`record`."""
        rows = {}
        for name, to_rows in self._input_rows:
            array = inputs.get(name)
            if array is not None:
                rows[name] = to_rows(array)
        return rows

    def record(
        self,
        inputs: Mapping[str, np.ndarray],
        outputs: Mapping[str, np.ndarray],
        latency_s: float,
        input_rows: Mapping[str, np.ndarray] | None = None,
    ) -> str:
        """Count one successful call; returns its prediction id."""
        if input_rows is None:
            input_rows = self.input_rows(inputs)
        prediction_id = self._id_prefix + hex(next(self._ids))[2:]  # no format-spec parsing
        capture = self._capture_rate > 0.0 and self._random() < self._capture_rate
        with self._lock:
            window = self._window
            window.requests += 1
            self._life_requests += 1
            pending = window.pending_ms
            pending.append(latency_s * 1e3)
            if len(pending) >= LATENCY_BATCH:
                window.flush_latency()
            rows = 0
            for name, add in self._input_adds:
                features = input_rows.get(name)
                if features is not None:
                    add(inputs[name], features)
                    rows = features.shape[0]
            window.rows += rows
            for name, add in self._output_adds:
                array = outputs.get(name)
                if array is not None:
                    add(array)
            if capture:
                self._add_capture(window, inputs, outputs, prediction_id, "sampled")
        return prediction_id

    def record_failure(self, kind: FailureKind, latency_s: float) -> None:
        """Count a rejected or failed call (the latency sketches hold successful calls only)."""
        with self._lock:
            window = self._window
            window.requests += 1
            if kind == "invalid":
                window.invalid += 1
            else:
                window.errors += 1
            self._life_requests += 1
            self._life_failures += 1

    def capture(
        self,
        inputs: Mapping[str, np.ndarray],
        outputs: Mapping[str, np.ndarray],
        prediction_id: str,
    ) -> bool:
        """Add an application-provided capture (CaptureData); False if the window is full."""
        with self._lock:
            return self._add_capture(self._window, inputs, outputs, prediction_id, "application")

    def _add_capture(
        self,
        window: _Window,
        inputs: Mapping[str, np.ndarray],
        outputs: Mapping[str, np.ndarray],
        prediction_id: str,
        source: str,
    ) -> bool:
        cfg = self.config
        if len(window.captures) >= cfg.max_captures:
            window.captures_dropped += 1
            return False
        kept_inputs, in_bytes = _captured(inputs, cfg)
        kept_outputs, out_bytes = _captured(outputs, cfg)
        size = in_bytes + out_bytes + len(prediction_id[:128]) + 96
        if window.capture_bytes + size > cfg.max_capture_bytes:
            window.captures_dropped += 1
            return False
        window.capture_bytes += size
        window.captures.append(
            {
                "prediction_id": prediction_id[:128],
                "at": self._clock(),
                "source": source,
                "inputs": kept_inputs,
                "outputs": kept_outputs,
            }
        )
        return True

    def health(self) -> HealthStats:
        with self._lock:
            sketch = new_sketch(self.config.kll_k)  # closed windows + the open one
            if self._life_latency is not None:
                sketch.merge(self._life_latency)
            sketch.merge(self._window.flush_latency())
            p95 = None if sketch.is_empty() else float(sketch.get_quantile(0.95))
            return HealthStats(self._life_requests, self._life_failures, p95)

    def set_capture_rate(self, rate: float) -> None:
        """Change the sampled-capture rate (the control plane's ``capture`` command)."""
        self._capture_rate = rate

    def pending_requests(self) -> int:
        with self._lock:
            window = self._window
            return window.requests + len(window.captures) + window.captures_dropped

    def close_window(self, device_id: str, sequence: int) -> dict[str, Any]:
        """Close the current window and return it as a JSON-able dict; a new one starts."""
        with self._lock:
            window, self._window = self._window, self._new_window()
            if self._life_latency is None:
                self._life_latency = new_sketch(self.config.kll_k)
            self._life_latency.merge(window.flush_latency())
            inputs = {n: c.take() for n, c in self._inputs.items()}
            outputs = {n: c.take() for n, c in self._outputs.items()}
        ended = self._window.started_at
        m = self.manifest
        return {
            "kind": "telemetry_window",
            "device_id": device_id,
            "sequence": sequence,
            "model_name": m.model_name,
            "model_version": m.model_version,
            "package_id": m.package_id,
            "release": m.release,
            "started_at": window.started_at,
            "ended_at": ended,
            "requests": window.requests,
            "rows": window.rows,
            "errors": window.errors,
            "invalid": window.invalid,
            "latency_ms": _latency_summary(window.flush_latency()),
            "inputs": [_histograms(c.binner, inputs[n]) for n, c in self._inputs.items()],
            "outputs": [_histograms(c.binner, outputs[n]) for n, c in self._outputs.items()],
            "captures": window.captures,
            "captures_dropped": window.captures_dropped,
        }
