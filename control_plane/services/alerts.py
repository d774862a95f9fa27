"""Drift alerts: drift reports -> readings -> :class:`AlertBook` transitions -> webhooks.

``AlertService.check_drift(now)`` evaluates, for every model version with
windows in the store, the drift of the windows started in the last
``window_s`` seconds (per package) and feeds ``drift_features`` and
``drift_share`` readings to the rules (``core/alerts.py``; ``default_rules``
per model unless given). Firing and resolved transitions are POSTed as JSON
to every configured webhook; a firing ``retrain`` rule also posts a
retraining request (model, version, the drift report as evidence, and where
the captured samples are). A failed delivery is logged and returned, never
swallowed. The book lives in this process's memory: alerts are not persisted
yet (docs/monitoring.md, "What is left").
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from control_plane.core.alerts import (
    Alert,
    AlertBook,
    AlertRule,
    Reading,
    Transition,
    default_rules,
    labels_of,
    retraining_request,
)
from control_plane.services.monitoring import MonitoringService

logger = logging.getLogger(__name__)

DRIFT_METRICS = ("drift_features", "drift_share")


@dataclass(frozen=True)
class Delivery:
    url: str
    kind: str  # "alert" or "retraining_request"
    alert_id: str
    ok: bool
    error: str | None = None


@dataclass(frozen=True)
class CheckResult:
    readings: int
    transitions: tuple[Transition, ...]
    deliveries: tuple[Delivery, ...] = field(default=())


def alert_view(alert: Alert) -> dict[str, Any]:
    return {
        "id": alert.id,
        "rule": alert.rule.name,
        "metric": alert.rule.metric,
        "severity": alert.rule.severity,
        "threshold": alert.rule.threshold,
        "comparison": alert.rule.comparison,
        "labels": dict(alert.labels),
        "state": alert.state,
        "since": alert.since,
        "value": alert.value,
        "fired_at": alert.fired_at,
        "resolved_at": alert.resolved_at,
        "acknowledged_by": alert.acknowledged_by,
        "gates_rollout": alert.rule.gates_rollout,
        "retrain": alert.rule.retrain,
    }


def post_json(url: str, body: dict[str, Any], timeout: float = 5.0) -> None:
    """POST ``body`` as JSON; raises OSError (URLError, HTTPError) unless the answer is 2xx."""
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "User-Agent": "fleetcast-alerts"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310 (configured)
        answer.read()


class AlertService:
    def __init__(
        self,
        monitoring: MonitoringService,
        webhooks: Sequence[str] = (),
        rules_for: Callable[[str], tuple[AlertRule, ...]] = default_rules,
        window_s: float = 900.0,
        send: Callable[[str, dict[str, Any]], None] = post_json,
    ) -> None:
        for url in webhooks:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"alert webhook {url!r}: expected an http(s) URL")
        self.monitoring = monitoring
        self.webhooks = tuple(webhooks)
        self.rules_for = rules_for
        self.window_s = window_s
        self.send = send
        self._books: dict[str, AlertBook] = {}  # per model: its rules
        self._evidence: dict[str, dict[str, Any]] = {}  # series labels -> last report
        self._lock = threading.Lock()

    def check_drift(self, now: float) -> CheckResult:
        """Evaluate the drift rules of every model on the last ``window_s`` of windows."""
        with self._lock:
            readings: dict[str, list[Reading]] = {}
            for model, version in sorted(self.monitoring.repos.monitoring.window_counts()):
                answer = self.monitoring.drift(model, version, since=now - self.window_s, until=now)
                for report in answer["reports"]:
                    if report["status"] == "insufficient":
                        continue  # too few rows: no verdict, no reading
                    labels = labels_of(
                        {
                            "model": model,
                            "version": version,
                            "group": "all",
                            "profile": str(report["profile_id"]),
                        }
                    )
                    self._evidence[repr(labels)] = report
                    readings.setdefault(model, []).extend(
                        [
                            Reading("drift_features", float(len(report["drifted"])), now, labels),
                            Reading("drift_share", float(report["drifted_share"]), now, labels),
                        ]
                    )
            transitions: list[Transition] = []
            for model in sorted(set(readings) | set(self._books)):
                book = self._books.get(model)
                if book is None:
                    rules = tuple(r for r in self.rules_for(model) if r.metric in DRIFT_METRICS)
                    book = self._books[model] = AlertBook(rules)
                transitions += book.evaluate(readings.get(model, []), now)
            deliveries = [d for t in transitions for d in self._deliver(t)]
            count = sum(len(v) for v in readings.values())
            return CheckResult(count, tuple(transitions), tuple(deliveries))

    def alerts(self) -> list[Alert]:
        """Live alerts (pending and firing), then the resolved ones, newest last."""
        with self._lock:
            live = [a for book in self._books.values() for a in book.active.values()]
            return live + [a for book in self._books.values() for a in book.history]

    def blocks_rollout(self, model: str, version: str) -> list[Alert]:
        """Firing gate alerts on this version (for the rollout engine's promotion check)."""
        with self._lock:
            book = self._books.get(model)
            return [] if book is None else book.blocks_rollout(model, version)

    def _deliver(self, transition: Transition) -> list[Delivery]:
        alert = transition.alert
        if alert.state == "pending":
            return []  # a breach not yet lasting for_s: nobody is told
        bodies = [
            ("alert", {"kind": "alert", "previous": transition.previous, **alert_view(alert)})
        ]
        if alert.state == "firing" and alert.rule.retrain:
            labels = dict(alert.labels)
            model, version = labels.get("model"), labels.get("version")
            samples = {
                "table": "captures",
                "model": model,
                "version": version,
                "accuracy": f"/api/v1/accuracy?model={model}&version={version}",
            }
            evidence = self._evidence.get(repr(alert.labels), {})
            bodies.append(("retraining_request", retraining_request(alert, evidence, samples)))
        out = []
        for url in self.webhooks:
            for kind, body in bodies:
                try:
                    self.send(url, body)
                    out.append(Delivery(url, kind, alert.id, True))
                except (OSError, ValueError) as exc:
                    logger.warning("alert %s: %s to %s failed: %s", alert.id, kind, url, exc)
                    out.append(Delivery(url, kind, alert.id, False, str(exc)))
        return out
