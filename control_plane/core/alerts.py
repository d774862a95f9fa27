"""Alert rules over metric readings, their lifecycle, and the retraining request (no I/O).

A rule watches one metric per series (a series is a label set such as model,
version and device group): the readings inside its ``window_s`` are averaged,
compared with the threshold, and the breach must last ``for_s`` before the
alert fires (Prometheus' ``for``). Lifecycle::

    (breach) -> pending --for_s--> firing --(no breach)--> resolved
                pending --(no breach)--> dropped (never notified)
    firing --acknowledge--> firing, acknowledged (no repeat notifications)

:meth:`AlertBook.evaluate` returns the transitions; delivery (webhook, SMTP)
and the rollout gate act on them outside this module.
"""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

Comparison = Literal[">", ">=", "<", "<="]
Severity = Literal["info", "warning", "critical"]
State = Literal["pending", "firing", "resolved"]
Labels = tuple[tuple[str, str], ...]

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


def labels_of(mapping: Mapping[str, str]) -> Labels:
    return tuple(sorted(mapping.items()))


@dataclass(frozen=True)
class AlertRule:
    name: str
    metric: str
    threshold: float
    comparison: Comparison = ">"
    window_s: float = 300.0
    for_s: float = 0.0
    severity: Severity = "warning"
    match: Labels = ()  # the series must carry these labels (e.g. model=...)
    retrain: bool = False  # a firing alert raises a retraining request
    gates_rollout: bool = False  # a firing alert blocks promotion of the series' version

    def breached(self, value: float) -> bool:
        return _COMPARE[self.comparison](value, self.threshold)

    def applies_to(self, labels: Labels) -> bool:
        return set(self.match) <= set(labels)


@dataclass(frozen=True)
class Reading:
    metric: str
    value: float
    at: float
    labels: Labels = ()


@dataclass(frozen=True)
class Alert:
    rule: AlertRule
    labels: Labels
    state: State
    since: float  # when the breach began
    value: float
    fired_at: float | None = None
    resolved_at: float | None = None
    acknowledged_by: str | None = None

    @property
    def id(self) -> str:
        series = ",".join(f"{k}={v}" for k, v in self.labels)
        return f"{self.rule.name}{{{series}}}@{self.since:.0f}"


@dataclass(frozen=True)
class Transition:
    alert: Alert
    previous: State | None  # None: a new pending alert


@dataclass
class AlertBook:
    """The live alerts of a set of rules; feed it readings, act on the transitions."""

    rules: tuple[AlertRule, ...]
    active: dict[tuple[str, Labels], Alert] = field(default_factory=dict)
    history: list[Alert] = field(default_factory=list)

    def evaluate(self, readings: Iterable[Reading], now: float) -> list[Transition]:
        """Evaluate every rule on the mean of its series' readings in ``(now - window_s, now]``.

        A live alert whose series has no reading in the window resolves (the
        breach is no longer observed); silence itself is watched by its own
        metric (``silent_device_share``).
        """
        readings = list(readings)
        transitions: list[Transition] = []
        for rule in self.rules:
            windowed = _in_window(readings, rule, now)
            for labels, values in windowed.items():
                value = sum(values) / len(values)
                transitions += self._step(rule, labels, value, rule.breached(value), now)
            for name, labels in [k for k in self.active if k[0] == rule.name]:
                if labels not in windowed:
                    value = self.active[(name, labels)].value
                    transitions += self._step(rule, labels, value, False, now)
        return transitions

    def _step(
        self, rule: AlertRule, labels: Labels, value: float, breach: bool, now: float
    ) -> list[Transition]:
        key = (rule.name, labels)
        alert = self.active.get(key)
        if breach:
            if alert is None:
                alert = Alert(rule, labels, "pending", since=now, value=value)
                self.active[key] = alert
                out = [Transition(alert, None)]
                if rule.for_s <= 0:
                    out += self._fire(key, alert, value, now)
                return out
            if alert.state == "pending" and now - alert.since >= rule.for_s:
                return self._fire(key, alert, value, now)
            self.active[key] = replace(alert, value=value)
            return []
        if alert is None:
            return []
        del self.active[key]
        if alert.state == "pending":
            return []  # never fired, never notified
        resolved = replace(alert, state="resolved", resolved_at=now, value=value)
        self.history.append(resolved)
        return [Transition(resolved, "firing")]

    def _fire(
        self, key: tuple[str, Labels], alert: Alert, value: float, now: float
    ) -> list[Transition]:
        firing = replace(alert, state="firing", fired_at=now, value=value)
        self.active[key] = firing
        return [Transition(firing, alert.state)]

    def acknowledge(self, alert_id: str, by: str) -> Alert:
        """Mark a firing alert acknowledged; KeyError if no live alert has this id."""
        for key, alert in self.active.items():
            if alert.id == alert_id and alert.state == "firing":
                self.active[key] = replace(alert, acknowledged_by=by)
                return self.active[key]
        raise KeyError(alert_id)

    def firing(self) -> list[Alert]:
        return [a for a in self.active.values() if a.state == "firing"]

    def blocks_rollout(self, model: str, version: str) -> list[Alert]:
        """Firing gate alerts on this model version (a drifting canary blocks promotion)."""
        return [
            a
            for a in self.firing()
            if a.rule.gates_rollout and {("model", model), ("version", version)} <= set(a.labels)
        ]


def _in_window(
    readings: Iterable[Reading], rule: AlertRule, now: float
) -> dict[Labels, list[float]]:
    out: dict[Labels, list[float]] = {}
    for r in readings:
        if (
            r.metric == rule.metric
            and now - rule.window_s < r.at <= now
            and rule.applies_to(r.labels)
        ):
            out.setdefault(r.labels, []).append(r.value)
    return out


def default_rules(model: str, window_s: float = 900.0) -> tuple[AlertRule, ...]:
    """The rules every model gets unless configured otherwise (docs/monitoring.md)."""
    match = (("model", model),)
    return (
        AlertRule(
            "feature_drift",
            "drift_features",
            1,
            ">=",
            window_s,
            2 * window_s,
            "warning",
            match,
            retrain=False,
            gates_rollout=True,
        ),
        AlertRule(
            "dataset_drift",
            "drift_share",
            0.5,
            ">=",
            window_s,
            window_s,
            "critical",
            match,
            retrain=True,
            gates_rollout=True,
        ),
        AlertRule(
            "error_rate",
            "error_rate",
            0.05,
            ">",
            window_s,
            300.0,
            "critical",
            match,
            gates_rollout=True,
        ),
        AlertRule(
            "accuracy_drop",
            "accuracy_drop",
            0.05,
            ">",
            6 * window_s,
            0.0,
            "critical",
            match,
            retrain=True,
            gates_rollout=True,
        ),
        AlertRule(
            "estimated_accuracy_drop",
            "estimated_accuracy_drop",
            0.05,
            ">",
            window_s,
            window_s,
            "warning",
            match,
        ),
        AlertRule(
            "attribution_drift",
            "attribution_top_k_overlap",
            0.6,
            "<",
            window_s,
            window_s,
            "warning",
            match,
        ),
        AlertRule(
            "silent_devices", "silent_device_share", 0.1, ">", window_s, window_s, "warning", match
        ),
    )


@dataclass(frozen=True)
class LabelGuards:
    """How much data the accuracy and attribution readings need before they exist (thin data
    gives no reading, so it cannot alert). Defaults and why: docs/monitoring.md."""

    lookback_s: float = 86400.0  # measured accuracy: predictions of the last day with labels
    min_labelled: int = 200  # labelled predictions for a measured-accuracy reading
    min_estimated: int = 100  # captures in the rule window for an estimated-accuracy reading
    attribution_lookback_s: float = 3 * 3600.0  # the latest closed attribution window in this


def accuracy_readings(
    summary: Mapping[str, Any], guards: LabelGuards, labels: Labels, now: float
) -> list[Reading]:
    """Readings from ``MonitoringService.label_summary``: ``accuracy`` and ``accuracy_drop``
    (reference minus measured) once ``min_labelled`` predictions are labelled;
    ``estimated_accuracy`` and ``estimated_accuracy_drop`` once ``min_estimated`` recent
    captures are scored. A drop needs the reference accuracy (the manifest's calibration)."""
    out: list[Reading] = []
    reference = summary.get("reference_accuracy")
    measured = summary.get("accuracy")
    if measured is not None and int(summary.get("labelled", 0)) >= guards.min_labelled:
        out.append(Reading("accuracy", float(measured), now, labels))
        if reference is not None:
            out.append(Reading("accuracy_drop", float(reference) - float(measured), now, labels))
    estimated = summary.get("estimated_accuracy")
    if (
        estimated is not None
        and summary.get("calibrated")
        and int(summary.get("recent_captures", 0)) >= guards.min_estimated
    ):
        out.append(Reading("estimated_accuracy", float(estimated), now, labels))
        if reference is not None:
            drop = float(reference) - float(estimated)
            out.append(Reading("estimated_accuracy_drop", drop, now, labels))
    return out


def attribution_reading(drift: Mapping[str, Any], labels: Labels, now: float) -> Reading | None:
    """``attribution_top_k_overlap`` of one attribution window's verdict; None when the
    window was ``insufficient`` (fewer explained rows than ``min_rows`` on either side)."""
    if drift.get("status") not in ("drift", "no_drift") or drift.get("top_k_overlap") is None:
        return None
    return Reading("attribution_top_k_overlap", float(drift["top_k_overlap"]), now, labels)


def retraining_request(
    alert: Alert, evidence: Mapping[str, Any], samples: Mapping[str, Any]
) -> dict[str, Any]:
    """The JSON body of a retraining webhook: model, version, why, and where the samples are."""
    labels = dict(alert.labels)
    return {
        "kind": "retraining_request",
        "model": labels.get("model"),
        "version": labels.get("version"),
        "group": labels.get("group"),
        "alert": {
            "id": alert.id,
            "rule": alert.rule.name,
            "metric": alert.rule.metric,
            "value": alert.value,
            "threshold": alert.rule.threshold,
            "severity": alert.rule.severity,
            "fired_at": alert.fired_at,
        },
        "evidence": dict(evidence),
        "samples": dict(samples),
    }


def rule_to_dict(rule: AlertRule) -> dict[str, Any]:
    """The rule as JSON (stored beside each alert, so a stored alert outlives a rule change)."""
    return {
        "name": rule.name,
        "metric": rule.metric,
        "threshold": rule.threshold,
        "comparison": rule.comparison,
        "window_s": rule.window_s,
        "for_s": rule.for_s,
        "severity": rule.severity,
        "match": [list(pair) for pair in rule.match],
        "retrain": rule.retrain,
        "gates_rollout": rule.gates_rollout,
    }


def rule_from_dict(data: Mapping[str, Any]) -> AlertRule:
    return AlertRule(
        name=str(data["name"]),
        metric=str(data["metric"]),
        threshold=float(data["threshold"]),
        comparison=data["comparison"],
        window_s=float(data["window_s"]),
        for_s=float(data["for_s"]),
        severity=data["severity"],
        match=tuple((str(k), str(v)) for k, v in data["match"]),
        retrain=bool(data["retrain"]),
        gates_rollout=bool(data["gates_rollout"]),
    )


def short_id(alert: Alert) -> str:
    """A URL-safe id for an alert (its ``id`` names the rule, series and start)."""
    return "al-" + hashlib.sha256(alert.id.encode()).hexdigest()[:20]


def backoff_s(attempts: int, base_s: float = 2.0, cap_s: float = 600.0) -> float:
    """Delay before the next delivery attempt after ``attempts`` failed ones (bounded, doubling)."""
    return float(min(cap_s, base_s * 2 ** max(0, attempts - 1)))


def silent_share(
    last_seen: Mapping[str, float | None], now: float, silent_after_s: float
) -> tuple[float, list[str]]:
    """Share of the devices not heard from for ``silent_after_s`` (never seen counts as silent),
    and their ids (sorted)."""
    silent = sorted(
        d for d, seen in last_seen.items() if seen is None or now - seen > silent_after_s
    )
    return (len(silent) / len(last_seen) if last_seen else 0.0), silent
