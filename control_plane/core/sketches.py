"""Merging telemetry windows: counts and histograms add exactly, KLL sketches merge (no I/O).

A window (see :mod:`edge_agent.core.telemetry`) carries, per input and output
tensor, one histogram per feature on the reference bins of the package's
manifest. Histograms of windows from the same package add bin by bin, so a
merge over devices or over time is exact. The latency KLL sketch (Apache
DataSketches) merges too; a merged sketch answers rank queries within its
normalized rank error (single-sided, 99 % confidence; ~1.33 % at k=200).

Features are keyed by ``(tensor, feature name)``; the same key reads the
reference statistics out of a :class:`~edge_agent.core.manifest.ReferenceStats`.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from datasketches import kll_floats_sketch

from edge_agent.core.manifest import FeatureStats, ReferenceStats

FeatureKey = tuple[str, str]
DEFAULT_KLL_K = 200


def feature_label(key: FeatureKey) -> str:
    """``tensor/feature``, for reports and metric labels."""
    return f"{key[0]}/{key[1]}"


def reference_features(reference: ReferenceStats) -> dict[FeatureKey, FeatureStats]:
    """Every input and output feature of the reference statistics, by key."""
    out: dict[FeatureKey, FeatureStats] = {}
    for tensor in (*reference.inputs, *reference.outputs):
        for feature in tensor.features:
            out[(tensor.tensor, feature.name)] = feature
    return out


def window_histograms(window: Mapping[str, Any]) -> dict[FeatureKey, np.ndarray]:
    """The per-feature counts of one telemetry window (inputs and outputs)."""
    out: dict[FeatureKey, np.ndarray] = {}
    for section in ("inputs", "outputs"):
        for tensor in window.get(section, ()):
            for feature in tensor["features"]:
                key = (str(tensor["tensor"]), str(feature["name"]))
                out[key] = np.asarray(feature["counts"], dtype=np.int64)
    return out


def add_histograms(
    parts: Iterable[Mapping[FeatureKey, np.ndarray]],
) -> dict[FeatureKey, np.ndarray]:
    """Bin-by-bin sum of histograms (exact); shapes must agree per feature."""
    total: dict[FeatureKey, np.ndarray] = {}
    for part in parts:
        for key, counts in part.items():
            if key in total:
                if total[key].shape != counts.shape:
                    raise ValueError(f"{feature_label(key)}: bins differ between windows")
                total[key] = total[key] + counts
            else:
                total[key] = np.array(counts, dtype=np.int64)
    return total


def decode_kll(encoded: str | bytes) -> kll_floats_sketch:
    """A KLL sketch from its serialized bytes, or from their base64 text (as in a window)."""
    raw = base64.b64decode(encoded) if isinstance(encoded, str) else encoded
    return kll_floats_sketch.deserialize(raw)


def merge_kll(sketches: Iterable[kll_floats_sketch], k: int = DEFAULT_KLL_K) -> kll_floats_sketch:
    """One sketch of all the streams; its rank error is the merged sketch's own."""
    merged = kll_floats_sketch(k)
    for sketch in sketches:
        merged.merge(sketch)
    return merged


def kll_rank_error(sketch: kll_floats_sketch) -> float:
    """Single-sided normalized rank error of ``sketch`` (99 % confidence); 0 when exact."""
    if sketch.is_empty() or not sketch.is_estimation_mode():
        return 0.0
    return float(sketch.normalized_rank_error(False))


def kll_histogram(sketch: kll_floats_sketch, edges: Iterable[float]) -> tuple[np.ndarray, float]:
    """Approximate counts of a sketched feature on reference ``edges`` (outer bins open).

    Returns the counts (as floats: a sketch's masses are estimates) and the
    rank error that bounds each cumulative share, to be added to a KS bound.
    """
    inner = [float(e) for e in list(edges)[1:-1]]
    n = float(sketch.n)
    if sketch.is_empty():
        return np.zeros(len(inner) + 1), 0.0
    # ranks exclusive of the split point: a value equal to an edge lands above it,
    # the way ``np.searchsorted(..., side="right")`` bins it
    pmf = np.asarray(sketch.get_pmf(inner, False), dtype=np.float64) if inner else np.ones(1)
    return pmf * n, kll_rank_error(sketch)


@dataclass
class WindowAccumulator:
    """Running merge of windows for one (model version, device group): exact counts, KLL."""

    k: int = DEFAULT_KLL_K
    windows: int = 0
    requests: int = 0
    rows: int = 0
    errors: int = 0
    invalid: int = 0
    histograms: dict[FeatureKey, np.ndarray] = field(default_factory=dict)
    latency: kll_floats_sketch = field(init=False)

    def __post_init__(self) -> None:
        self.latency = kll_floats_sketch(self.k)

    def add(self, window: Mapping[str, Any]) -> None:
        """Fold one telemetry window in."""
        self.windows += 1
        self.requests += int(window.get("requests", 0))
        self.rows += int(window.get("rows", 0))
        self.errors += int(window.get("errors", 0))
        self.invalid += int(window.get("invalid", 0))
        for key, counts in window_histograms(window).items():  # in place: no copy per window
            total = self.histograms.get(key)
            if total is None:
                self.histograms[key] = counts.copy()
            elif total.shape != counts.shape:
                raise ValueError(f"{feature_label(key)}: bins differ between windows")
            else:
                total += counts
        encoded = (window.get("latency_ms") or {}).get("kll")
        if encoded:
            self.latency.merge(decode_kll(encoded))

    @property
    def error_rate(self) -> float:
        return (self.errors + self.invalid) / self.requests if self.requests else 0.0


def group_windows(
    windows: Iterable[Mapping[str, Any]],
    groups: Mapping[str, str],
    default_group: str = "ungrouped",
) -> dict[tuple[str, str, str], WindowAccumulator]:
    """Merge windows per (model name, model version, device group); ``groups`` maps device ids."""
    merged: dict[tuple[str, str, str], WindowAccumulator] = {}
    for window in windows:
        group = groups.get(str(window.get("device_id", "")), default_group)
        key = (str(window["model_name"]), str(window["model_version"]), group)
        merged.setdefault(key, WindowAccumulator()).add(window)
    return merged


def merge_histogram_sections(parts: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Windows' ``{"inputs": [...], "outputs": [...]}`` histograms merged into one (exact).

    Per tensor and feature the counts add bin by bin; the first part's metadata (kind,
    feature axis) is kept. ValueError when a feature's bins differ between parts (windows
    of different packages are never merged).
    """
    merged: dict[str, list[dict[str, Any]]] = {"inputs": [], "outputs": []}
    index: dict[tuple[str, str, str], dict[str, Any]] = {}
    tensors: dict[tuple[str, str], dict[str, Any]] = {}
    for part in parts:
        for section in ("inputs", "outputs"):
            for tensor in part.get(section, ()):
                tkey = (section, str(tensor["tensor"]))
                target = tensors.get(tkey)
                if target is None:
                    target = tensors[tkey] = {**tensor, "features": []}
                    merged[section].append(target)
                for feature in tensor.get("features", ()):
                    fkey = (*tkey, str(feature["name"]))
                    counts = [int(c) for c in feature.get("counts", ())]
                    found = index.get(fkey)
                    if found is None:
                        index[fkey] = {**feature, "counts": counts}
                        target["features"].append(index[fkey])
                    elif len(found["counts"]) != len(counts):
                        raise ValueError(f"{fkey[1]}/{fkey[2]}: bins differ between windows")
                    else:
                        found["counts"] = [
                            a + b for a, b in zip(found["counts"], counts, strict=True)
                        ]
    return merged


def merge_latency(parts: Iterable[Mapping[str, Any]], k: int = DEFAULT_KLL_K) -> dict[str, Any]:
    """Windows' latency summaries merged: counts add, max is the max, the KLL sketches merge
    and the quantiles are read from the merged sketch."""
    count, peak, sketches = 0, None, []
    for part in parts:
        count += int(part.get("count", 0) or 0)
        top = part.get("max")
        if top is not None:
            peak = float(top) if peak is None else max(peak, float(top))
        if part.get("kll"):
            sketches.append(decode_kll(part["kll"]))
    out: dict[str, Any] = {"count": count, "max": peak}
    if sketches:
        sketch = merge_kll(sketches, k)
        p50, p95, p99 = (float(v) for v in sketch.get_quantiles([0.5, 0.95, 0.99]))
        out.update(p50=p50, p95=p95, p99=p99, kll=base64.b64encode(sketch.serialize()).decode())
    return out
