"""Accuracy from delayed labels, and a labelled estimate where labels are missing (no I/O).

Feedback (prediction id -> true label) arrives hours or days after the
prediction; :func:`join_feedback` matches it with the sampled captures and
returns the ids it cannot match (never drops them). :func:`measured_metrics`
gives accuracy and macro F1 (classification) or MAE (regression) per model
version, device group and time bucket of the *prediction*.

:class:`ConfidenceCalibrator` is in the spirit of NannyML's CBPE
(confidence-based performance estimation): on labelled reference data it
learns, by histogram binning, how often a prediction with a given top score is
right; on unlabelled traffic the expected accuracy is the mean calibrated
probability of being right. It holds as long as the model's calibration
holds (covariate shift, P(y | x) unchanged); under concept drift it does not,
which is why every estimate is marked ``kind="estimated"``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from edge_agent.core.manifest import ConfidenceCalibration

Task = Literal["classification", "regression"]


@dataclass(frozen=True)
class Capture:
    """A captured prediction: where and when it was scored, and what it said (first row)."""

    prediction_id: str
    at: float
    model_name: str
    model_version: str
    group: str
    scores: tuple[float, ...]  # class scores (classification) or the output (regression)

    @property
    def predicted_class(self) -> int:
        return int(np.argmax(self.scores))


@dataclass(frozen=True)
class Feedback:
    prediction_id: str
    label: float  # class index or target value
    received_at: float | None = None


@dataclass(frozen=True)
class JoinResult:
    matched: tuple[tuple[Capture, Feedback], ...]
    unknown_ids: tuple[str, ...]  # feedback whose prediction id no capture has
    duplicate_ids: tuple[str, ...]  # labelled more than once: the last label counts


def captures_from_window(
    window: Mapping[str, Any], output: str, groups: Mapping[str, str] | None = None
) -> list[Capture]:
    """The captures of one telemetry window, first row of ``output`` each."""
    group = (groups or {}).get(str(window.get("device_id", "")), "ungrouped")
    out = []
    for capture in window.get("captures", ()):
        rows = capture.get("outputs", {}).get(output)
        if not rows:
            continue
        first = np.asarray(rows[0], dtype=np.float64).ravel()
        out.append(
            Capture(
                prediction_id=str(capture["prediction_id"]),
                at=float(capture["at"]),
                model_name=str(window["model_name"]),
                model_version=str(window["model_version"]),
                group=group,
                scores=tuple(float(v) for v in first),
            )
        )
    return out


def join_feedback(captures: Iterable[Capture], feedback: Iterable[Feedback]) -> JoinResult:
    """Match feedback to captures by prediction id; unmatched ids are returned, not dropped."""
    by_id = {c.prediction_id: c for c in captures}
    latest: dict[str, Feedback] = {}
    duplicates: list[str] = []
    unknown: list[str] = []
    for item in feedback:
        if item.prediction_id not in by_id:
            unknown.append(item.prediction_id)
            continue
        if item.prediction_id in latest:
            duplicates.append(item.prediction_id)
        latest[item.prediction_id] = item
    matched = tuple((by_id[pid], fb) for pid, fb in latest.items())
    return JoinResult(matched, tuple(unknown), tuple(duplicates))


def macro_f1(labels: np.ndarray, predicted: np.ndarray) -> float:
    """Unweighted mean F1 over the classes present in labels or predictions."""
    classes = np.union1d(labels, predicted)
    scores = []
    for c in classes:
        tp = float(np.sum((predicted == c) & (labels == c)))
        fp = float(np.sum((predicted == c) & (labels != c)))
        fn = float(np.sum((predicted != c) & (labels == c)))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return float(np.mean(scores)) if scores else math.nan


@dataclass(frozen=True)
class BucketMetrics:
    """Performance of one (version, group, time bucket); ``kind`` says measured or estimated."""

    model_name: str
    model_version: str
    group: str
    bucket_start: float
    count: int
    kind: Literal["measured", "estimated"]
    accuracy: float | None = None
    f1_macro: float | None = None
    mae: float | None = None


def _bucket(at: float, bucket_s: float) -> float:
    """Start of the bucket holding ``at``; an infinite ``bucket_s`` is one bucket from 0."""
    return 0.0 if math.isinf(bucket_s) else math.floor(at / bucket_s) * bucket_s


def measured_metrics(
    matched: Iterable[tuple[Capture, Feedback]], task: Task, bucket_s: float = 3600.0
) -> list[BucketMetrics]:
    """Accuracy and macro F1, or MAE, per (model, version, group, bucket of the prediction)."""
    cells: dict[tuple[str, str, str, float], list[tuple[Capture, Feedback]]] = defaultdict(list)
    for capture, fb in matched:
        key = (
            capture.model_name,
            capture.model_version,
            capture.group,
            _bucket(capture.at, bucket_s),
        )
        cells[key].append((capture, fb))
    out = []
    for (name, version, group, start), pairs in sorted(cells.items()):
        labels = np.array([fb.label for _, fb in pairs], dtype=np.float64)
        if task == "classification":
            predicted = np.array([c.predicted_class for c, _ in pairs], dtype=np.float64)
            out.append(
                BucketMetrics(
                    name,
                    version,
                    group,
                    start,
                    len(pairs),
                    "measured",
                    accuracy=float(np.mean(predicted == labels)),
                    f1_macro=macro_f1(labels, predicted),
                )
            )
        else:
            values = np.array([c.scores[0] for c, _ in pairs], dtype=np.float64)
            mae = float(np.mean(np.abs(values - labels)))
            out.append(BucketMetrics(name, version, group, start, len(pairs), "measured", mae=mae))
    return out


@dataclass(frozen=True)
class ConfidenceCalibrator:
    """Histogram-binning calibration of the top class probability (CBPE-style estimate)."""

    edges: tuple[float, ...]
    hit_rate: tuple[float, ...]  # share of correct predictions per top-score bin

    @classmethod
    def fit(
        cls, probabilities: np.ndarray, labels: np.ndarray, bins: int = 10
    ) -> ConfidenceCalibrator:
        """Fit on labelled reference data: (rows, classes) probabilities and true classes."""
        top = probabilities.max(axis=1)
        correct = probabilities.argmax(axis=1) == np.asarray(labels)
        edges = np.unique(np.quantile(top, np.linspace(0.0, 1.0, bins + 1)))
        index = np.clip(np.searchsorted(edges, top, side="right") - 1, 0, max(edges.size - 2, 0))
        hits = np.bincount(index, weights=correct.astype(np.float64), minlength=edges.size - 1)
        totals = np.bincount(index, minlength=edges.size - 1)
        overall = float(correct.mean())
        rate = np.where(totals > 0, hits / np.maximum(totals, 1), overall)
        return cls(tuple(float(e) for e in edges), tuple(float(r) for r in rate))

    @classmethod
    def from_manifest(cls, calibration: ConfidenceCalibration) -> ConfidenceCalibrator:
        return cls(tuple(calibration.edges), tuple(calibration.hit_rate))

    def to_manifest(self, rows: int, accuracy: float, source: str) -> ConfidenceCalibration:
        return ConfidenceCalibration(
            edges=self.edges, hit_rate=self.hit_rate, rows=rows, accuracy=accuracy, source=source
        )

    def expected_correct(self, probabilities: np.ndarray) -> np.ndarray:
        edges = np.asarray(self.edges)
        top = probabilities.max(axis=1)
        index = np.clip(np.searchsorted(edges, top, side="right") - 1, 0, len(self.hit_rate) - 1)
        result: np.ndarray = np.asarray(self.hit_rate)[index]
        return result

    def estimate(self, probabilities: np.ndarray) -> tuple[float, float]:
        """(expected accuracy, its standard error from the per-prediction Bernoulli variance)."""
        p = self.expected_correct(probabilities)
        if p.size == 0:
            return math.nan, math.nan
        return float(p.mean()), float(np.sqrt((p * (1 - p)).sum()) / p.size)


def estimated_metrics(
    captures: Sequence[Capture], calibrator: ConfidenceCalibrator, bucket_s: float = 3600.0
) -> list[BucketMetrics]:
    """Estimated accuracy per (model, version, group, bucket) from the captured class scores."""
    cells: dict[tuple[str, str, str, float], list[Capture]] = defaultdict(list)
    for c in captures:
        cells[(c.model_name, c.model_version, c.group, _bucket(c.at, bucket_s))].append(c)
    out = []
    for (name, version, group, start), items in sorted(cells.items()):
        accuracy, _ = calibrator.estimate(np.array([c.scores for c in items], dtype=np.float64))
        out.append(
            BucketMetrics(name, version, group, start, len(items), "estimated", accuracy=accuracy)
        )
    return out


def calibrate(scores: np.ndarray, labels: np.ndarray, source: str) -> ConfidenceCalibration | None:
    """The manifest's calibration from labelled validation scores (None without labels of
    one class per row). The scores may be probabilities or logits: binning on the top score
    only needs them ordered the way the model's confidence is."""
    flat = np.asarray(scores, dtype=np.float64).reshape(len(scores), -1)
    truth = np.asarray(labels).reshape(-1)
    if flat.shape[1] < 2 or truth.shape[0] != flat.shape[0] or not len(truth):
        return None
    calibrator = ConfidenceCalibrator.fit(flat, truth)
    accuracy = float(np.mean(flat.argmax(axis=1) == truth))
    return calibrator.to_manifest(len(truth), accuracy, source)


def uncalibrated_confidence(scores: np.ndarray) -> np.ndarray:
    """Top class probability of each row, taking the scores as probabilities when they are
    (in [0, 1], rows summing to 1) and softmaxing them otherwise (logits). No calibration:
    the mean of this is what the model *claims*, labelled ``uncalibrated``."""
    flat = np.asarray(scores, dtype=np.float64).reshape(len(scores), -1)
    if (
        flat.size
        and (flat.min() >= 0)
        and (flat.max() <= 1)
        and np.allclose(flat.sum(axis=1), 1, atol=1e-3)
    ):
        probs = flat
    else:
        shifted = np.exp(flat - flat.max(axis=1, keepdims=True))
        probs = shifted / shifted.sum(axis=1, keepdims=True)
    result: np.ndarray = probs.max(axis=1)
    return result
