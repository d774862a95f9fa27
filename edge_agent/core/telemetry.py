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
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from datasketches import kll_floats_sketch

from edge_agent.core.bins import class_features, feature_matrix
from edge_agent.core.manifest import FeatureStats, Manifest, TensorStats

FailureKind = Literal["invalid", "error"]
QUANTILES = (0.5, 0.95, 0.99)


@dataclass(frozen=True)
class TelemetryConfig:
    """How much a window keeps besides its fixed-size sketches."""

    capture_rate: float = 0.0
    max_captures: int = 16
    max_capture_rows: int = 4
    max_capture_elements: int = 4096
    kll_k: int = 200


def _inner_edges(feature: FeatureStats) -> np.ndarray:
    if feature.kind == "categorical":
        cats = np.asarray(feature.categories or (0,), dtype=np.float64)
        return (cats[:-1] + cats[1:]) / 2.0
    edges = np.asarray(feature.edges or (0.0, 0.0), dtype=np.float64)
    return edges[1:-1]


class TensorBinner:
    """Counts one tensor's features on their reference bins."""

    def __init__(self, stats: TensorStats) -> None:
        self.stats = stats
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

    def feature_values(self, array: np.ndarray) -> np.ndarray:
        if self.stats.feature_axis == "class":
            predicted, top = class_features(array)
            return np.column_stack((predicted.astype(np.float64), top))
        return feature_matrix(array, self.stats.feature_axis)

    def counts(self, array: np.ndarray) -> np.ndarray | None:
        """Counts per (feature, bin), flattened; None if the tensor does not fit the stats."""
        values = self.feature_values(array)
        if values.shape[1] != self._top.size:
            return None
        below = (values[:, :, np.newaxis] < self._inner).sum(axis=2)
        index = np.minimum(self._width - below, self._top) + self.offsets
        return np.bincount(index.ravel(), minlength=self.total)

    def split(self, counts: np.ndarray) -> list[dict[str, Any]]:
        return [
            {"name": f.name, "kind": f.kind, "counts": counts[o : o + n].tolist()}
            for f, o, n in zip(self.stats.features, self.offsets, self.nbins, strict=True)
        ]


@dataclass
class _Window:
    started_at: float
    k: int
    requests: int = 0
    rows: int = 0
    errors: int = 0
    invalid: int = 0
    latency: kll_floats_sketch = field(init=False)
    inputs: dict[str, np.ndarray] = field(default_factory=dict)
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    captures: list[dict[str, Any]] = field(default_factory=list)
    captures_dropped: int = 0

    def __post_init__(self) -> None:
        self.latency = kll_floats_sketch(self.k)


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


def _capturable(array: np.ndarray, rows: int, limit: int) -> list[Any] | None:
    part = array[:rows]
    return part.tolist() if part.size <= limit else None


class ModelTelemetry:
    """Thread-safe window sketches of one model; the caller closes windows on its timer."""

    def __init__(
        self,
        manifest: Manifest,
        config: TelemetryConfig | None = None,
        clock: Callable[[], float] = time.time,
        seed: int | None = None,
    ) -> None:
        self.manifest = manifest
        self.config = config or TelemetryConfig()
        self._clock = clock
        self._lock = threading.Lock()
        self._rng = np.random.default_rng(seed)
        self._inputs = {s.tensor: TensorBinner(s) for s in manifest.reference.inputs}
        self._outputs = {s.tensor: TensorBinner(s) for s in manifest.reference.outputs}
        self._ids = itertools.count(1)
        self._id_prefix = f"{os.urandom(4).hex()}-"
        self._window = self._new_window()
        self._life_requests = 0
        self._life_failures = 0
        self._life_latency = kll_floats_sketch(self.config.kll_k)

    def _new_window(self) -> _Window:
        window = _Window(started_at=self._clock(), k=self.config.kll_k)
        window.inputs = {n: np.zeros(b.total, dtype=np.int64) for n, b in self._inputs.items()}
        window.outputs = {n: np.zeros(b.total, dtype=np.int64) for n, b in self._outputs.items()}
        return window

    def next_prediction_id(self) -> str:
        return f"{self._id_prefix}{next(self._ids):x}"

    def record(
        self,
        inputs: Mapping[str, np.ndarray],
        outputs: Mapping[str, np.ndarray],
        latency_s: float,
    ) -> str:
        """Count one successful call; returns its prediction id."""
        prediction_id = self.next_prediction_id()
        in_counts = [(n, b.counts(inputs[n])) for n, b in self._inputs.items() if n in inputs]
        out_counts = [(n, b.counts(outputs[n])) for n, b in self._outputs.items() if n in outputs]
        rows = int(next(iter(inputs.values())).shape[0])
        latency_ms = latency_s * 1e3
        capture = self.config.capture_rate > 0 and self._rng.random() < self.config.capture_rate
        with self._lock:
            window = self._window
            window.requests += 1
            window.rows += rows
            window.latency.update(latency_ms)
            self._life_requests += 1
            self._life_latency.update(latency_ms)
            for name, counts in in_counts:
                if counts is not None:
                    window.inputs[name] += counts
            for name, counts in out_counts:
                if counts is not None:
                    window.outputs[name] += counts
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
        window.captures.append(
            {
                "prediction_id": prediction_id,
                "at": self._clock(),
                "source": source,
                "inputs": {
                    n: _capturable(a, cfg.max_capture_rows, cfg.max_capture_elements)
                    for n, a in inputs.items()
                },
                "outputs": {
                    n: _capturable(a, cfg.max_capture_rows, cfg.max_capture_elements)
                    for n, a in outputs.items()
                },
            }
        )
        return True

    def health(self) -> HealthStats:
        with self._lock:
            sketch = self._life_latency
            p95 = None if sketch.is_empty() else float(sketch.get_quantile(0.95))
            return HealthStats(self._life_requests, self._life_failures, p95)

    def pending_requests(self) -> int:
        with self._lock:
            return self._window.requests + len(self._window.captures)

    def close_window(self, device_id: str, sequence: int) -> dict[str, Any]:
        """Close the current window and return it as a JSON-able dict; a new one starts."""
        with self._lock:
            window, self._window = self._window, self._new_window()
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
            "latency_ms": _latency_summary(window.latency),
            "inputs": [
                {
                    "tensor": n,
                    "feature_axis": b.stats.feature_axis,
                    "features": b.split(window.inputs[n]),
                }
                for n, b in self._inputs.items()
            ],
            "outputs": [
                {
                    "tensor": n,
                    "feature_axis": b.stats.feature_axis,
                    "features": b.split(window.outputs[n]),
                }
                for n, b in self._outputs.items()
            ],
            "captures": window.captures,
            "captures_dropped": window.captures_dropped,
        }
