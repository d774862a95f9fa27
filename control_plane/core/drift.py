"""Drift of live traffic against a package's reference bins, with controlled false alarms.

Pure functions over histograms (no I/O). Every statistic is vectorised over a
leading axis of windows, so 1,000 devices cost one numpy pass per feature.

Statistics, per feature (input or output), reference ``p`` vs current ``q``:

- **PSI** ``sum((q - p) * ln(q / p))`` on smoothed shares: each bin gets a
  pseudo-count of ``pseudo_count`` (0.5, Jeffreys) before normalising, so an
  empty bin gives a finite, small-sample-aware term instead of Evidently's
  ``1e-4`` clip, which makes one empty bin of 10 worth ~0.7 PSI on its own.
- **Jensen-Shannon distance** (base 2, in [0, 1]) on the raw shares, equal to
  ``scipy.spatial.distance.jensenshannon(p, q, base=2)``.
- **Kolmogorov-Smirnov** ``D_bin = max |P(e) - Q(e)|`` over the reference edges.
  Binning bound: the raw-data statistic satisfies
  ``D_bin <= D_raw <= D_bin + max_i max(p_i, q_i)`` (inside a bin each CDF
  moves by at most that bin's mass). Sketch bound: when ``q`` comes from a KLL
  sketch each cumulative share is within its rank error ``eps`` (99 %), so the
  test uses ``max(D_bin - eps, 0)``. A flag therefore needs a shift larger
  than sampling error (the test) plus sketch error (subtracted); binning only
  ever lowers D, which makes the test conservative, never liberal.
  p-value: two-sample Kolmogorov asymptotics with Stephens' small-sample
  correction, ``n_e = n m / (n + m)`` with ``m`` the reference rows.
- **Chi-square** (categorical): two-sample contingency test of reference
  counts vs current counts (``scipy.stats.chi2_contingency``, no Yates);
  categories expected below 5 in the current window are pooled into one
  (Cochran's rule), empty columns are dropped from the degrees of freedom.

Decision rule (why: a p-value alone flags trivial shifts at 1M rows, a
distance alone flags noise at 200 rows): a feature **drifts** when its
Holm-adjusted p-value is at most ``alpha`` (family-wise error over the
features of one evaluation, so a no-drift window raises any flag with
probability <= ``alpha``) **and** its PSI is at least ``psi_floor`` (the 0.1
"moderate shift" end of the 0.1/0.25 PSI convention). A feature with fewer
than ``min_rows`` rows (or a reference under ``min_rows``) is
**insufficient**, never "no drift".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from scipy import special, stats

from control_plane.core.sketches import FeatureKey, add_histograms, feature_label
from edge_agent.core.manifest import FeatureStats

Status = Literal["drift", "no_drift", "insufficient"]


@dataclass(frozen=True)
class DriftThresholds:
    """Per-model drift configuration; defaults and their sources in docs/monitoring.md."""

    alpha: float = 0.01  # family-wise false-alarm level per evaluation (Holm)
    psi_floor: float = 0.1  # effect-size floor: PSI "moderate" (0.1/0.25 convention)
    psi_major: float = 0.25  # PSI "major shift": severity only
    min_rows: int = 100  # fewer rows: "insufficient" (see docs/monitoring.md)
    pseudo_count: float = 0.5  # PSI smoothing per bin (Jeffreys)
    min_expected: float = 5.0  # chi-square: pool categories expected below this
    drift_share: float = 0.5  # dataset drift when this share of features drifts (Evidently)


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's figures and verdict in one evaluation."""

    key: FeatureKey
    kind: str
    rows: float
    psi: float
    js_distance: float
    ks_d: float | None  # binned D (numeric), None for categorical
    ks_binning_bound: float | None  # D_raw <= ks_d + this
    sketch_error: float  # rank error subtracted before testing
    test: Literal["ks", "chi2"]
    statistic: float
    p_value: float
    p_adjusted: float
    status: Status
    severity: Literal["none", "moderate", "major"]

    @property
    def label(self) -> str:
        return feature_label(self.key)


@dataclass(frozen=True)
class DriftReport:
    """Verdict over the features of one model evaluation (a window or a merge of windows)."""

    features: tuple[FeatureDrift, ...]
    thresholds: DriftThresholds
    drifted: tuple[FeatureKey, ...] = field(default=())

    @property
    def evaluated(self) -> int:
        return sum(1 for f in self.features if f.status != "insufficient")

    @property
    def drifted_share(self) -> float:
        """Share of the evaluated features that drift (the drift score); 0 with none evaluated."""
        return len(self.drifted) / self.evaluated if self.evaluated else 0.0

    @property
    def dataset_drift(self) -> bool:
        return self.evaluated > 0 and self.drifted_share >= self.thresholds.drift_share

    @property
    def status(self) -> Status:
        if not self.evaluated:
            return "insufficient"
        return "drift" if self.drifted else "no_drift"

    @property
    def max_psi(self) -> float:
        return max((f.psi for f in self.features if f.status != "insufficient"), default=0.0)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able: stored with the report, and the evidence of a retraining request."""
        return {
            "status": self.status,
            "drifted_share": self.drifted_share,
            "dataset_drift": self.dataset_drift,
            "drifted": [feature_label(k) for k in self.drifted],
            "thresholds": asdict(self.thresholds),
            "features": [{**asdict(f), "key": f.label} for f in self.features],
        }


# --- statistics, vectorised over the leading axis (windows) --------------------------


def _shares(counts: np.ndarray) -> np.ndarray:
    totals = counts.sum(axis=-1, keepdims=True)
    out = np.zeros_like(counts, dtype=np.float64)
    shares: np.ndarray = np.divide(counts, totals, out=out, where=totals > 0)
    return shares


def population_stability_index(
    reference: np.ndarray, current: np.ndarray, pseudo_count: float = 0.5
) -> np.ndarray:
    """PSI of current counts vs reference counts, each bin smoothed by ``pseudo_count``."""
    p = _shares(np.asarray(reference, dtype=np.float64) + pseudo_count)
    q = _shares(np.asarray(current, dtype=np.float64) + pseudo_count)
    result: np.ndarray = ((q - p) * np.log(q / p)).sum(axis=-1)
    return result


def jensen_shannon_distance(reference: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Jensen-Shannon distance (base 2) of the two binned distributions."""
    p = _shares(np.asarray(reference, dtype=np.float64))
    q = _shares(np.asarray(current, dtype=np.float64))
    m = (p + q) / 2.0

    def _kl(a: np.ndarray) -> np.ndarray:
        ratio = np.divide(a, m, out=np.ones_like(a), where=a > 0)
        return (a * np.log2(ratio)).sum(axis=-1)  # type: ignore[no-any-return]

    result: np.ndarray = np.sqrt(np.clip((_kl(p) + _kl(q)) / 2.0, 0.0, 1.0))
    return result


def ks_binned(reference: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(D over the bin edges, binning bound ``max_i max(p_i, q_i)``); D_raw lies within."""
    p = _shares(np.asarray(reference, dtype=np.float64))
    q = _shares(np.asarray(current, dtype=np.float64))
    d = np.abs(np.cumsum(p, axis=-1) - np.cumsum(q, axis=-1))[..., :-1]
    d_max = d.max(axis=-1) if d.shape[-1] else np.zeros(d.shape[:-1])
    return d_max, np.maximum(p, q).max(axis=-1)


def ks_p_value(d: np.ndarray, n: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Asymptotic two-sample KS p-value (Kolmogorov, Stephens' correction)."""
    n = np.asarray(n, dtype=np.float64)
    m = np.asarray(m, dtype=np.float64)
    en = np.sqrt(np.divide(n * m, n + m, out=np.zeros_like(n * m), where=(n + m) > 0))
    lam = (en + 0.12 + 0.11 / np.maximum(en, 1e-12)) * np.asarray(d, dtype=np.float64)
    result: np.ndarray = np.clip(special.kolmogorov(lam), 0.0, 1.0)
    return result


def chi_square_two_sample(
    reference: np.ndarray, current: np.ndarray, min_expected: float = 5.0
) -> tuple[np.ndarray, np.ndarray]:
    """(statistic, p-value) of the 2 x k contingency test, rare categories pooled."""
    ref = np.atleast_2d(np.asarray(reference, dtype=np.float64))
    cur = np.atleast_2d(np.asarray(current, dtype=np.float64))
    ref = np.broadcast_to(ref, cur.shape)
    n = cur.sum(axis=-1, keepdims=True)
    rare = _shares(ref) * n < min_expected
    pooled_ref = np.where(rare, ref, 0.0).sum(axis=-1, keepdims=True)
    pooled_cur = np.where(rare, cur, 0.0).sum(axis=-1, keepdims=True)
    table_ref = np.concatenate((np.where(rare, 0.0, ref), pooled_ref), axis=-1)
    table_cur = np.concatenate((np.where(rare, 0.0, cur), pooled_cur), axis=-1)
    col = table_ref + table_cur
    total = col.sum(axis=-1, keepdims=True)
    row_ref = table_ref.sum(axis=-1, keepdims=True)
    row_cur = table_cur.sum(axis=-1, keepdims=True)
    exp_ref = np.divide(row_ref * col, total, out=np.zeros_like(col), where=total > 0)
    exp_cur = np.divide(row_cur * col, total, out=np.zeros_like(col), where=total > 0)
    live = col > 0
    # a cell expected empty (one side has no rows at all) adds nothing, never 0/0
    terms = np.divide(
        (table_ref - exp_ref) ** 2, exp_ref, out=np.zeros_like(col), where=exp_ref > 0
    )
    terms += np.divide(
        (table_cur - exp_cur) ** 2, exp_cur, out=np.zeros_like(col), where=exp_cur > 0
    )
    statistic = terms.sum(axis=-1)
    dof = np.maximum(live.sum(axis=-1) - 1, 1)
    return statistic, stats.chi2.sf(statistic, dof)


def holm_adjust(p_values: np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values along the last axis (NaN entries left out)."""
    p = np.asarray(p_values, dtype=np.float64)
    filled = np.where(np.isnan(p), np.inf, p)
    order = np.argsort(filled, axis=-1)
    ranked = np.take_along_axis(filled, order, axis=-1)
    m = (~np.isnan(p)).sum(axis=-1, keepdims=True)
    factors = np.maximum(m - np.arange(p.shape[-1]), 1)
    adjusted = np.minimum(np.maximum.accumulate(ranked * factors, axis=-1), 1.0)
    out = np.empty_like(adjusted)
    np.put_along_axis(out, order, adjusted, axis=-1)
    return np.where(np.isnan(p), np.nan, out)


# --- evaluation -----------------------------------------------------------------------


def reference_counts(feature: FeatureStats) -> np.ndarray:
    """The reference histogram as counts (shares times the reference rows)."""
    return np.asarray(feature.frequencies, dtype=np.float64) * float(feature.count)


@dataclass(frozen=True)
class _Figures:
    rows: np.ndarray
    psi: np.ndarray
    js: np.ndarray
    ks_d: np.ndarray | None
    bound: np.ndarray | None
    statistic: np.ndarray
    p_value: np.ndarray


def _feature_figures(
    feature: FeatureStats, current: np.ndarray, sketch_error: np.ndarray, t: DriftThresholds
) -> _Figures:
    ref = reference_counts(feature)
    if current.shape[-1] != ref.size:
        raise ValueError(f"{feature.name}: {current.shape[-1]} bins, reference has {ref.size}")
    rows = current.sum(axis=-1)
    psi = population_stability_index(ref, current, t.pseudo_count)
    js = jensen_shannon_distance(np.broadcast_to(ref, current.shape), current)
    if feature.kind == "categorical":
        statistic, p = chi_square_two_sample(ref, current, t.min_expected)
        return _Figures(rows, psi, js, None, None, statistic, p)
    d, bound = ks_binned(np.broadcast_to(ref, current.shape), current)
    tested = np.maximum(d - sketch_error, 0.0)
    p = ks_p_value(tested, rows, np.full_like(rows, float(feature.count), dtype=np.float64))
    return _Figures(rows, psi, js, d, bound, tested, p)


def evaluate_many(
    reference: Mapping[FeatureKey, FeatureStats],
    current: Mapping[FeatureKey, np.ndarray],
    thresholds: DriftThresholds | None = None,
    sketch_errors: Mapping[FeatureKey, np.ndarray | float] | None = None,
) -> list[DriftReport]:
    """One report per row of ``current[key]`` (shape ``(windows, bins)``, or ``(bins,)``).

    Features missing from ``current`` are left out; extra ones raise ``KeyError``.
    """
    t = thresholds or DriftThresholds()
    keys = [k for k in reference if k in current]
    if unknown := [feature_label(k) for k in current if k not in reference]:
        raise KeyError(f"no reference statistics for {', '.join(unknown)}")
    counts = {k: np.atleast_2d(np.asarray(current[k], dtype=np.float64)) for k in keys}
    windows = max((c.shape[0] for c in counts.values()), default=0)
    errors = sketch_errors or {}
    figures = [
        _feature_figures(
            reference[k],
            np.broadcast_to(counts[k], (windows, counts[k].shape[-1])),
            np.broadcast_to(np.asarray(errors.get(k, 0.0), dtype=np.float64), (windows,)),
            t,
        )
        for k in keys
    ]
    if not keys:
        return [DriftReport((), t) for _ in range(windows)]
    enough = np.stack(
        [
            (f.rows >= t.min_rows) & (reference[k].count >= t.min_rows)
            for k, f in zip(keys, figures, strict=True)
        ],
        axis=-1,
    )
    p = np.stack([f.p_value for f in figures], axis=-1)
    adjusted = holm_adjust(np.where(enough, p, np.nan))
    psi = np.stack([f.psi for f in figures], axis=-1)
    drifts = enough & (adjusted <= t.alpha) & (psi >= t.psi_floor)
    reports = []
    for w in range(windows):
        features = tuple(
            _feature_drift(
                k,
                reference[k],
                f,
                w,
                errors.get(k, 0.0),
                bool(enough[w, i]),
                bool(drifts[w, i]),
                float(adjusted[w, i]),
                t,
            )
            for i, (k, f) in enumerate(zip(keys, figures, strict=True))
        )
        drifted = tuple(k for i, k in enumerate(keys) if drifts[w, i])
        reports.append(DriftReport(features, t, drifted))
    return reports


def _feature_drift(
    key: FeatureKey,
    feature: FeatureStats,
    f: _Figures,
    w: int,
    sketch_error: np.ndarray | float,
    enough: bool,
    drifts: bool,
    adjusted: float,
    t: DriftThresholds,
) -> FeatureDrift:
    psi = float(f.psi[w])
    status: Status = "insufficient" if not enough else "drift" if drifts else "no_drift"
    severity: Literal["none", "moderate", "major"] = "none"
    if drifts:
        severity = "major" if psi >= t.psi_major else "moderate"
    error = np.broadcast_to(np.asarray(sketch_error, dtype=np.float64), f.rows.shape)
    return FeatureDrift(
        key=key,
        kind=feature.kind,
        rows=float(f.rows[w]),
        psi=psi,
        js_distance=float(f.js[w]),
        ks_d=None if f.ks_d is None else float(f.ks_d[w]),
        ks_binning_bound=None if f.bound is None else float(f.bound[w]),
        sketch_error=float(error[w]),
        test="chi2" if feature.kind == "categorical" else "ks",
        statistic=float(f.statistic[w]),
        p_value=float(f.p_value[w]),
        p_adjusted=adjusted,
        status=status,
        severity=severity,
    )


def evaluate(
    reference: Mapping[FeatureKey, FeatureStats],
    current: Mapping[FeatureKey, np.ndarray],
    thresholds: DriftThresholds | None = None,
    sketch_errors: Mapping[FeatureKey, float] | None = None,
) -> DriftReport:
    """The drift report of one evaluation (a window, or windows already merged)."""
    errors = {k: np.asarray(v) for k, v in (sketch_errors or {}).items()}
    return evaluate_many(reference, current, thresholds, errors)[0]


def sliding_reports(
    reference: Mapping[FeatureKey, FeatureStats],
    windows: Sequence[Mapping[FeatureKey, np.ndarray]],
    width: int,
    thresholds: DriftThresholds | None = None,
) -> list[DriftReport]:
    """A report per window position over the merge of the last ``width`` windows (exact sums)."""
    if width < 1:
        raise ValueError("width must be at least 1")
    merged = [add_histograms(windows[max(0, i - width + 1) : i + 1]) for i in range(len(windows))]
    keys = [k for k in reference if all(k in m for m in merged)]
    stacked = {k: np.stack([m[k] for m in merged]) for k in keys}
    return evaluate_many(reference, stacked, thresholds) if merged else []


def drift_by_group(
    references: Mapping[tuple[str, str], Mapping[FeatureKey, FeatureStats]],
    merged: Mapping[tuple[str, str, str], Mapping[FeatureKey, np.ndarray]],
    thresholds: DriftThresholds | None = None,
) -> dict[tuple[str, str, str], DriftReport]:
    """The drift score per (model, version, device group) over merged windows.

    ``references`` maps (model, version) to its reference features; ``merged``
    maps (model, version, group) to histograms, e.g. ``WindowAccumulator.histograms``
    from :func:`~control_plane.core.sketches.group_windows`. Versions without a
    reference are left out (the catalog has not registered their manifest).
    """
    return {
        key: evaluate(references[key[:2]], histograms, thresholds)
        for key, histograms in merged.items()
        if key[:2] in references
    }
