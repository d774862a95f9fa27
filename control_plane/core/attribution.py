"""Attribution drift and the explanation budget (pure: no I/O, no shap).

The explanation side (``control_plane/monitoring/explain.py``) turns captured
rows into SHAP values; here they become signals:

- :func:`attribution_drift` compares the mean |SHAP| per feature of a window
  with the reference's (the package's own reference rows explained the same
  way): Spearman rank correlation over all features, Spearman over the union
  of both top-k sets (the ranking of the features that matter, where the
  zero-attribution tail cannot dilute it), and the top-k overlap.
- :func:`judge` turns that into a verdict with :class:`AttributionThresholds`:
  ``drift`` when the top-k overlap falls below ``min_overlap`` **or** the
  top-k Spearman falls below ``min_spearman``; ``insufficient`` when either
  side explained fewer than ``min_rows`` rows (never "no drift").
- :func:`budget_pick` chooses which captures of a window are explained
  (at most ``max_rows``), reproducibly: by the sha256 of the prediction id,
  a pseudo-random sample that does not favour early or late captures and
  gives the same choice on every replica and every retry.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from scipy.stats import spearmanr

Status = Literal["drift", "no_drift", "insufficient"]


@dataclass(frozen=True)
class AttributionThresholds:
    """When a ranking change counts as attribution drift (defaults: docs/monitoring.md)."""

    k: int = 3  # the top features compared
    min_overlap: float = 0.6  # share of the reference top-k still in the current top-k
    min_spearman: float = 0.5  # rank correlation over the union of both top-k sets
    min_rows: int = 8  # explained rows needed on each side


@dataclass(frozen=True)
class AttributionDrift:
    spearman: float  # rank correlation of mean |SHAP| over every feature (1: same ranking)
    top_k_spearman: float  # the same over the union of both top-k sets
    top_k_overlap: float  # |top-k(ref) & top-k(cur)| / k
    entered_top_k: tuple[str, ...]
    left_top_k: tuple[str, ...]
    reference_top: tuple[str, ...] = ()
    current_top: tuple[str, ...] = ()


@dataclass(frozen=True)
class AttributionVerdict:
    status: Status
    drift: AttributionDrift | None
    reference_rows: int
    current_rows: int
    thresholds: AttributionThresholds
    reasons: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "reasons": list(self.reasons),
            "thresholds": asdict(self.thresholds),
            **({} if self.drift is None else _drift_dict(self.drift)),
        }


def _drift_dict(drift: AttributionDrift) -> dict[str, Any]:
    out = asdict(drift)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2:
        return 1.0
    if np.ptp(a) == 0 or np.ptp(b) == 0:  # a constant side has no ranking
        return 1.0 if np.ptp(a) == np.ptp(b) else 0.0
    rho = float(spearmanr(a, b).statistic)
    return rho if math.isfinite(rho) else 0.0


def _top(names: Sequence[str], values: np.ndarray, k: int) -> tuple[str, ...]:
    return tuple(names[i] for i in np.argsort(-values, kind="stable")[:k])


def attribution_drift(
    reference: Mapping[str, float], current: Mapping[str, float], k: int = 5
) -> AttributionDrift:
    """How far the ranking of important features moved (mean |SHAP| per feature)."""
    names = [n for n in reference if n in current]
    ref = np.array([reference[n] for n in names], dtype=np.float64)
    cur = np.array([current[n] for n in names], dtype=np.float64)
    k = min(k, len(names))
    top_ref, top_cur = _top(names, ref, k), _top(names, cur, k)
    union = [i for i, n in enumerate(names) if n in set(top_ref) | set(top_cur)]
    return AttributionDrift(
        spearman=_spearman(ref, cur),
        top_k_spearman=_spearman(ref[union], cur[union]),
        top_k_overlap=len(set(top_ref) & set(top_cur)) / k if k else 1.0,
        entered_top_k=tuple(sorted(set(top_cur) - set(top_ref))),
        left_top_k=tuple(sorted(set(top_ref) - set(top_cur))),
        reference_top=top_ref,
        current_top=top_cur,
    )


def judge(
    reference: Mapping[str, float],
    reference_rows: int,
    current: Mapping[str, float],
    current_rows: int,
    thresholds: AttributionThresholds | None = None,
) -> AttributionVerdict:
    """The attribution-drift verdict of one window against the reference."""
    t = thresholds or AttributionThresholds()
    if reference_rows < t.min_rows or current_rows < t.min_rows:
        why = f"explained rows: reference {reference_rows}, window {current_rows}"
        return AttributionVerdict(
            "insufficient", None, reference_rows, current_rows, t,
            (f"{why}; at least {t.min_rows} each are needed",),
        )  # fmt: skip
    drift = attribution_drift(reference, current, t.k)
    reasons = []
    if drift.top_k_overlap < t.min_overlap:
        reasons.append(f"top-{t.k} overlap {drift.top_k_overlap:.2f} < {t.min_overlap}")
    if drift.top_k_spearman < t.min_spearman:
        reasons.append(f"top-{t.k} rank correlation {drift.top_k_spearman:.2f} < {t.min_spearman}")
    status: Status = "drift" if reasons else "no_drift"
    return AttributionVerdict(status, drift, reference_rows, current_rows, t, tuple(reasons))


def budget_pick(prediction_ids: Sequence[str], max_rows: int) -> list[str]:
    """At most ``max_rows`` ids, a reproducible pseudo-random sample (by sha256 of the id)."""
    ranked = sorted(
        dict.fromkeys(prediction_ids), key=lambda p: hashlib.sha256(p.encode()).hexdigest()
    )
    return ranked[: max(max_rows, 0)]


def window_start(at: float, window_s: float) -> float:
    """The start of the fixed window of ``window_s`` seconds that ``at`` falls in."""
    return math.floor(at / window_s) * window_s


def additivity_error(
    values: np.ndarray, base_value: float | np.ndarray, prediction: float | np.ndarray
) -> np.ndarray:
    """|sum of attributions + base value - prediction| per row (SHAP's local accuracy)."""
    v = np.atleast_2d(np.asarray(values, dtype=np.float64))
    result: np.ndarray = np.abs(v.sum(axis=1) + np.asarray(base_value) - np.asarray(prediction))
    return result
