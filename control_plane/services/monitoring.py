"""Monitoring over the indexed telemetry: drift reports, feedback labels, measured accuracy.

Windows are decoded once at ingest (``services/ingest.py``) into
``telemetry_windows`` and ``captures``; here they are read back, merged per
package (histograms add exactly, KLL sketches merge) and evaluated with the pure
core (``core/drift.py``, ``core/accuracy.py``) against the reference statistics
of the package's manifest, which the catalog keeps (``services/packages.py``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from pydantic import ValidationError

from control_plane.core.accuracy import (
    Capture,
    ConfidenceCalibrator,
    Feedback,
    join_feedback,
    macro_f1,
    measured_metrics,
    uncalibrated_confidence,
)
from control_plane.core.drift import DriftThresholds, evaluate, sliding_reports
from control_plane.core.sketches import WindowAccumulator, feature_label, reference_features
from control_plane.errors import InvalidInput, NotFound
from control_plane.monitoring.metrics import MonitoringMetrics
from control_plane.services import Clock
from control_plane.services.audit import AuditService
from control_plane.services.tokens import Principal
from control_plane.store.records import FeedbackLabel, StoredCapture, StoredWindow
from control_plane.store.repos import Repositories
from edge_agent.core.manifest import Manifest
from edge_agent.core.telemetry import QUANTILES

MAX_FEEDBACK = 10_000


def finite(value: Any) -> Any:
    """``value`` with every NaN/inf float replaced by None (JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


@dataclass(frozen=True)
class FeedbackResult:
    received: int
    matched: int
    unknown_ids: tuple[str, ...]
    duplicate_ids: tuple[str, ...]


class MonitoringService:
    def __init__(
        self,
        repos: Repositories,
        audit: AuditService,
        metrics: MonitoringMetrics | None = None,
        clock: Clock = time.time,
        thresholds: DriftThresholds | None = None,
    ) -> None:
        self.repos = repos
        self.audit = audit
        self.metrics = metrics
        self.clock = clock
        self.thresholds = thresholds or DriftThresholds()
        self._manifests: dict[str, Manifest | None] = {}  # packages are immutable by sha256

    def manifest(self, sha256: str) -> Manifest | None:
        """The catalog's manifest of a package; None when it is not a full manifest."""
        if sha256 not in self._manifests:
            try:
                stored = self.repos.packages.get(sha256).manifest
                self._manifests[sha256] = Manifest.model_validate(stored)
            except (NotFound, ValidationError):
                return None
        return self._manifests[sha256]

    # -- drift

    def drift(
        self,
        model: str,
        version: str | None = None,
        device_id: str | None = None,
        since: float | None = None,
        until: float | None = None,
        devices: Collection[str] | None = None,
        *,
        group: str | None = None,
        group_by: str | None = None,
        step_seconds: float | None = None,
        width: int = 3,
    ) -> dict[str, Any]:
        """Matching windows merged per (device group, package) and evaluated against the
        package's reference. ``group`` (``label=value``) keeps the devices carrying that label;
        ``group_by`` (a label key) evaluates each of its values apart; with ``step_seconds``
        each report also carries the sliding drift score over the last ``width`` steps;
        ``devices``: only the windows of these devices, e.g. a rollout wave's."""
        selector = parse_group(group) if group is not None else None
        windows = self.repos.monitoring.windows(
            model_name=model, model_version=version, device_id=device_id, since=since, until=until
        )
        if devices is not None:
            wanted = set(devices)
            windows = [w for w in windows if w.device_id in wanted]
        labels = self._device_labels() if selector or group_by else {}
        if selector is not None:
            windows = [
                w for w in windows if labels.get(w.device_id, {}).get(selector[0]) == selector[1]
            ]
        by_package: dict[tuple[str, str | None, str | None], list[StoredWindow]] = {}
        for w in windows:
            label = device_id or group or "all"
            if group_by is not None:
                label = f"{group_by}={labels.get(w.device_id, {}).get(group_by, '')}"
            by_package.setdefault((label, w.package_sha256, w.package_id), []).append(w)
        reports: list[dict[str, Any]] = []
        unevaluated: list[dict[str, Any]] = []
        attributions = self._latest_attributions(model, version, since, until)
        for (label, sha256, package_id), part in by_package.items():
            manifest = None if sha256 is None else self.manifest(sha256)
            if manifest is None:
                unevaluated.append(
                    {
                        "group": label,
                        "package_id": package_id,
                        "package_sha256": sha256,
                        "windows": sum(w.merged for w in part),
                        "reason": _unevaluated_reason(package_id, sha256),
                    }
                )
                continue
            report = self._package_report(manifest, part, label)
            report["package_sha256"], report["package_id"] = sha256, package_id
            report["attribution_drift"] = attributions.get(sha256 or "")
            if step_seconds is not None:
                report["sliding"] = self._sliding(manifest, part, step_seconds, width)
            reports.append(report)
        return finite_dict(
            {
                "model": model,
                "version": version,
                "device_id": device_id,
                "group": group,
                "group_by": group_by,
                "since": since,
                "until": until,
                "windows": sum(w.merged for w in windows),
                "rows": sum(w.rows for w in windows),
                "reports": reports,
                "unevaluated": unevaluated,
            }
        )

    def _latest_attributions(
        self, model: str, version: str | None, since: float | None, until: float | None
    ) -> dict[str, dict[str, Any]]:
        """Per package, the latest attribution-drift verdict of the background explanation
        job in the same time range (the signal beside data drift), with its window start."""
        latest: dict[str, dict[str, Any]] = {}
        for w in self.repos.insights.windows(
            model_name=model, model_version=version, since=since, until=until
        ):
            latest[w.package_sha256] = {**w.drift, "window_start": w.window_start}
        return latest

    def _device_labels(self) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        offset: int | None = 0
        while offset is not None:
            page = self.repos.devices.list(limit=1000, offset=offset)
            out.update({d.id: d.labels for d in page.items})
            offset = page.next_offset
        return out

    def _package_report(
        self, manifest: Manifest, part: Sequence[StoredWindow], label: str
    ) -> dict[str, Any]:
        acc = WindowAccumulator()
        for w in part:
            acc.add(w.folded())
        report = evaluate(reference_features(manifest.reference), acc.histograms, self.thresholds)
        if self.metrics is not None:
            self.metrics.observe_drift(manifest.model_name, manifest.model_version, label, report)
            self.metrics.observe_merged(manifest.model_name, manifest.model_version, label, acc)
        latency = (
            {}
            if acc.latency.is_empty()
            else dict(
                zip(
                    ("p50", "p95", "p99"),
                    (float(v) for v in acc.latency.get_quantiles(list(QUANTILES))),
                    strict=True,
                )
            )
        )
        return {
            "group": label,
            "profile_id": manifest.profile.id,
            "model_version": manifest.model_version,
            "windows": sum(w.merged for w in part),  # rollups count what they merged
            "requests": acc.requests,
            "rows": acc.rows,
            "error_rate": acc.error_rate,
            "latency_ms": latency,
            "first_started_at": part[0].started_at,
            "last_ended_at": max(w.ended_at for w in part),
            **report.as_dict(),
        }

    def _sliding(
        self, manifest: Manifest, part: Sequence[StoredWindow], step: float, width: int
    ) -> list[dict[str, Any]]:
        """The drift score at each step (of window start time) over the last ``width`` steps."""
        steps: dict[float, WindowAccumulator] = {}
        for w in part:
            steps.setdefault(math.floor(w.started_at / step) * step, WindowAccumulator()).add(
                w.folded()
            )
        starts = sorted(steps)
        reports = sliding_reports(
            reference_features(manifest.reference),
            [steps[s].histograms for s in starts],
            width,
            self.thresholds,
        )
        return [
            {
                "step_start": start,
                "steps_merged": min(i + 1, width),
                "status": r.status,
                "drifted_share": r.drifted_share,
                "drifted": [feature_label(k) for k in r.drifted],
            }
            for i, (start, r) in enumerate(zip(starts, reports, strict=True))
        ]

    # -- feedback and accuracy

    def add_feedback(
        self, labels: Sequence[tuple[str, float]], principal: Principal
    ) -> FeedbackResult:
        """Store the labels (all of them: a capture uploaded later still joins) and join them
        with the stored captures; ids no capture has are returned, never dropped."""
        if not labels:
            raise InvalidInput("feedback: at least one (prediction_id, label) is needed")
        if len(labels) > MAX_FEEDBACK:
            raise InvalidInput(f"feedback: {len(labels)} labels, at most {MAX_FEEDBACK} a request")
        for pid, label in labels:
            if not math.isfinite(label):
                raise InvalidInput(f"feedback for {pid!r}: the label must be a finite number")
        now = self.clock()
        ids = [pid for pid, _ in labels]
        captures = [_capture(c, None) for c in self.repos.monitoring.captures(ids)]
        joined = join_feedback(captures, [Feedback(pid, label, now) for pid, label in labels])
        self.repos.monitoring.put_feedback(
            [FeedbackLabel(pid, label, now, principal.name) for pid, label in labels]
        )
        result = FeedbackResult(
            received=len(labels),
            matched=len(joined.matched),
            unknown_ids=joined.unknown_ids,
            duplicate_ids=joined.duplicate_ids,
        )
        self.audit.record(
            principal.name,
            "feedback.add",
            "feedback",
            detail={
                "received": result.received,
                "matched": result.matched,
                "unknown": len(result.unknown_ids),
            },
        )
        return result

    def accuracy(
        self,
        model: str,
        version: str,
        bucket_s: float = 3600.0,
        *,
        device_id: str | None = None,
        group: str | None = None,
        group_by: str | None = None,
    ) -> dict[str, Any]:
        """Measured metrics per (device group, time bucket of the prediction) from labelled
        captures, the CBPE estimate per (group, bucket) from every capture (classification),
        and a summary per group. ``device_id`` or ``group`` (``label=value``) keep those
        devices' captures; ``group_by`` (a label key) splits them by its values."""
        selector = parse_group(group) if group is not None else None
        captures = self.repos.monitoring.version_captures(model, version)
        manifest = self._version_manifest(model, version, captures)
        if manifest.task == "embedding":
            raise InvalidInput(f"{model} {version} is an embedding model: no accuracy to measure")
        output = manifest.signature.outputs[0].name
        labels = self._device_labels() if selector or group_by else {}
        default = device_id or group or "all"

        def group_of(device: str) -> str | None:
            if device_id is not None and device != device_id:
                return None
            carried = labels.get(device, {})
            if selector is not None and carried.get(selector[0]) != selector[1]:
                return None
            return default if group_by is None else f"{group_by}={carried.get(group_by, '')}"

        parsed = []
        for stored in captures:
            label = group_of(stored.device_id)
            capture = _capture(stored, output, label or "")
            if label is not None and capture.scores:
                parsed.append(capture)
        feedback = self.repos.monitoring.feedback([c.prediction_id for c in parsed])
        joined = join_feedback(
            parsed, [Feedback(f.prediction_id, f.label, f.received_at) for f in feedback]
        )
        buckets = measured_metrics(joined.matched, manifest.task, bucket_s)
        classifier = manifest.task == "classification"
        return finite_dict(
            {
                "model": model,
                "version": version,
                "task": manifest.task,
                "output": output,
                "bucket_seconds": bucket_s,
                "device_id": device_id,
                "group": group,
                "group_by": group_by,
                "captures": len(parsed),
                "labelled": len(joined.matched),
                "buckets": [asdict(b) for b in buckets],
                "groups": group_summaries(parsed, joined.matched, manifest),
                "estimated": estimated_accuracy(parsed, manifest, bucket_s) if classifier else None,
            }
        )

    def label_summary(
        self, model: str, version: str, since: float, recent_since: float
    ) -> dict[str, Any] | None:
        """What the alert rules read of a classifier version (None for other tasks, or without
        captures or a manifest): measured accuracy over the labelled captures predicted after
        ``since``, the CBPE estimate over every capture predicted after ``recent_since``, and
        the reference accuracy (the manifest calibration's, on the compile's validation rows;
        None without a calibration). Counts are given so the caller can refuse thin data."""
        captures = self.repos.monitoring.version_captures(model, version, since=since)
        if not captures:
            return None
        try:
            manifest = self._version_manifest(model, version, captures)
        except NotFound:
            return None
        if manifest.task != "classification":
            return None
        output = manifest.signature.outputs[0].name
        parsed = [c for c in (_capture(s, output) for s in captures) if c.scores]
        labels = self.repos.monitoring.feedback([c.prediction_id for c in parsed])
        joined = join_feedback(
            parsed, [Feedback(f.prediction_id, f.label, f.received_at) for f in labels]
        )
        truth = np.array([f.label for _, f in joined.matched], dtype=np.float64)
        predicted = np.array([c.predicted_class for c, _ in joined.matched], dtype=np.float64)
        recent = [c for c in parsed if c.at > recent_since]
        estimate = _estimate(recent, manifest) if recent else None
        calibration = manifest.calibration
        return {
            "model": model,
            "version": version,
            "since": since,
            "captures": len(parsed),
            "labelled": int(truth.size),
            "accuracy": float(np.mean(predicted == truth)) if truth.size else None,
            "f1_macro": macro_f1(truth, predicted) if truth.size else None,
            "recent_since": recent_since,
            "recent_captures": len(recent),
            "estimated_accuracy": None if estimate is None else estimate[0],
            "estimated_standard_error": None if estimate is None else estimate[1],
            "calibrated": calibration is not None,
            "reference_accuracy": None if calibration is None else calibration.accuracy,
            "reference_source": None if calibration is None else calibration.source,
        }

    def _version_manifest(
        self, model: str, version: str, captures: Sequence[StoredCapture]
    ) -> Manifest:
        shas = [c.package_sha256 for c in captures if c.package_sha256]
        shas += [p.sha256 for p in self.repos.packages.list(
            model_name=model, model_version=version, limit=1000).items]  # fmt: skip
        for sha in dict.fromkeys(shas):
            manifest = self.manifest(sha)
            if manifest is not None:
                return manifest
        raise NotFound(f"no package of {model} {version} with a manifest is in the catalog")

    # -- metrics

    def refresh_metrics(self) -> None:
        """Bring the ingest counters up to the store's totals (every replica's ingest counts)."""
        if self.metrics is None:
            return
        for (model, version), (windows, rows) in self.repos.monitoring.window_counts().items():
            self.metrics.sync_ingest(model, version, windows, rows)


def estimated_accuracy(
    captures: Sequence[Capture], manifest: Manifest, bucket_s: float
) -> dict[str, Any]:
    """CBPE-style estimated accuracy per (group, bucket) from every capture, labelled or not.

    With the manifest's calibration (hit rate per top-score bin on the compile's labelled
    validation rows) each prediction counts as its bin's hit rate; without one, the top
    class probability the model claims (softmax of logits), marked ``uncalibrated``.
    """
    cells: dict[tuple[str, float], list[Capture]] = {}
    for c in captures:
        cells.setdefault((c.group, math.floor(c.at / bucket_s) * bucket_s), []).append(c)
    calibration = manifest.calibration
    buckets = []
    for (group, start), items in sorted(cells.items()):
        value, error = _estimate(items, manifest)
        buckets.append(
            {
                "group": group,
                "bucket_start": start,
                "count": len(items),
                "accuracy": value,
                "standard_error": error,
            }
        )
    return {
        "kind": "estimated",
        "method": "confidence-based (CBPE-style): expected share of correct predictions",
        "calibration": "uncalibrated"
        if calibration is None
        else f"histogram binning on {calibration.rows} labelled rows of {calibration.source}",
        "calibrated": calibration is not None,
        "reference_accuracy": None if calibration is None else calibration.accuracy,
        "buckets": buckets,
    }


def group_summaries(
    captures: Sequence[Capture],
    matched: Sequence[tuple[Capture, Feedback]],
    manifest: Manifest,
) -> list[dict[str, Any]]:
    """One line per group over the whole range: captures, labelled, the measured figures
    (accuracy and macro F1, or MAE) and, for a classifier, the CBPE estimate beside them."""
    task = manifest.task
    if task == "embedding":
        return []
    by_group: dict[str, list[Capture]] = {}
    for c in captures:
        by_group.setdefault(c.group, []).append(c)
    pairs: dict[str, list[tuple[Capture, Feedback]]] = {}
    for capture, fb in matched:
        pairs.setdefault(capture.group, []).append((capture, fb))
    out = []
    for group, items in sorted(by_group.items()):
        measured = measured_metrics(pairs.get(group, []), task, math.inf)
        line: dict[str, Any] = {
            "group": group,
            "captures": len(items),
            "labelled": measured[0].count if measured else 0,
        }
        if task == "classification":
            estimate, error = _estimate(items, manifest)
            line |= {
                "accuracy": measured[0].accuracy if measured else None,
                "f1_macro": measured[0].f1_macro if measured else None,
                "estimated_accuracy": estimate,
                "estimated_standard_error": error,
            }
        else:
            line["mae"] = measured[0].mae if measured else None
        out.append(line)
    return out


def _estimate(captures: Sequence[Capture], manifest: Manifest) -> tuple[float, float]:
    """(expected accuracy, standard error) of these captures: calibrated by the manifest's
    calibration when it has one, else the top class probability the model claims."""
    scores = np.array([c.scores for c in captures], dtype=np.float64)
    if manifest.calibration is not None:
        return ConfidenceCalibrator.from_manifest(manifest.calibration).estimate(scores)
    p = uncalibrated_confidence(scores)
    return float(p.mean()), float(np.sqrt((p * (1 - p)).sum()) / p.size)


def parse_group(group: str) -> tuple[str, str]:
    """``label=value`` as (label, value); InvalidInput naming the expected form."""
    key, sep, value = group.partition("=")
    if not sep or not key:
        raise InvalidInput(f"group {group!r}: expected label=value (e.g. site=berlin)")
    return key, value


def _unevaluated_reason(package_id: str | None, sha256: str | None) -> str:
    if package_id is None:
        return "the window names no package id (an older agent)"
    if sha256 is None:
        return f"package {package_id!r} is not in the catalog"
    return f"package {sha256} has no reference statistics in its manifest"


def finite_dict(value: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = finite(value)
    return out


def _capture(stored: StoredCapture, output: str | None, group: str = "all") -> Capture:
    """A stored capture as the core's :class:`Capture` of ``group`` (first row of ``output``;
    with None the first output it holds, for the join by id only)."""
    outputs = stored.outputs
    name = output if output is not None else next(iter(outputs), None)
    rows = outputs.get(name) if name is not None else None
    scores: tuple[float, ...] = ()
    if rows:
        first = rows[0]
        flat = first if isinstance(first, list) else [first]
        while flat and isinstance(flat[0], list):
            flat = [v for part in flat for v in part]
        scores = tuple(float(v) for v in flat)
    return Capture(
        prediction_id=stored.prediction_id,
        at=stored.at,
        model_name=stored.model_name,
        model_version=stored.model_version,
        group=group,
        scores=scores,
    )
