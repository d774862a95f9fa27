"""Alerts: readings -> the stored alert book -> notifications (webhooks, e-mail) with retries.

:meth:`AlertService.evaluate` (the serve timer calls it every ``--alert-interval`` seconds;
``POST /api/v1/alerts/evaluate`` on demand) builds readings for every model with telemetry:

- ``drift_features`` / ``drift_share`` per package from the windows started in the last
  ``window_s`` (insufficient data gives no drift reading);
- ``error_rate`` of the same windows ((errors + invalid) / requests);
- ``silent_device_share``: of the devices that sent the model a window in the last
  ``availability_lookback_s``, the share not heard from (``last_seen``) for ``silent_after_s``;
- per version of a classifier (``MonitoringService.label_summary``): ``accuracy`` and
  ``accuracy_drop`` (manifest reference minus measured, from delayed labels) once
  ``LabelGuards.min_labelled`` predictions are labelled, ``estimated_accuracy`` and
  ``estimated_accuracy_drop`` (CBPE) once ``min_estimated`` captures fall in ``window_s``;
- ``attribution_top_k_overlap`` per package from its latest attribution window
  (``insufficient`` windows give none).

The live alerts are loaded from the store into a :class:`~control_plane.core.alerts.AlertBook`
per model (``default_rules`` overlaid by the operators' stored rules,
``services/alert_rules.py``), the readings evaluated, and the changed alerts saved **in the
same transaction** as the notifications they cause (an outbox): a crash between the two
loses nothing. :meth:`deliver_due` then sends what is due; a failed attempt is recorded and
retried with bounded exponential backoff (``backoff_s``); after ``max_attempts`` the
delivery is ``failed`` and stays visible (``GET /api/v1/alerts/deliveries``,
``fleetcast_alert_deliveries{state="failed"}``, an ERROR log line). A firing ``retrain``
rule also queues a retraining request (model, version, evidence, where the samples are).
"""

from __future__ import annotations

import builtins
import json
import logging
import smtplib
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from email.message import EmailMessage
from typing import Any

from control_plane.core.alert_rules import METRICS
from control_plane.core.alerts import (
    Alert,
    AlertBook,
    AlertRule,
    LabelGuards,
    Labels,
    Reading,
    Transition,
    accuracy_readings,
    attribution_reading,
    backoff_s,
    default_rules,
    labels_of,
    retraining_request,
    short_id,
    silent_share,
)
from control_plane.errors import InvalidInput
from control_plane.services.alert_rules import AlertRuleService
from control_plane.services.audit import AuditService
from control_plane.services.monitoring import MonitoringService
from control_plane.services.tokens import Principal
from control_plane.store.records import (
    DEFAULT_LIMIT,
    AlertDelivery,
    NewDelivery,
    Page,
    StoredAlert,
    StoredAlertRule,
)

logger = logging.getLogger(__name__)

ROLLOUT_PHASES = ("running", "paused", "completed", "aborted", "rolled_back")
ROLLOUTS_IN_METRICS = 100  # the newest: bounded label cardinality
EVALUATED_METRICS = METRICS  # what _readings builds; a rule on another metric never fires


@dataclass(frozen=True)
class SmtpConfig:
    """Where alert e-mails go out (stdlib smtplib; STARTTLS and login when given)."""

    host: str
    port: int = 25
    sender: str = "fleetcast@localhost"
    starttls: bool = False
    username: str | None = None
    password: str | None = None
    timeout_s: float = 10.0


@dataclass(frozen=True)
class Notifications:
    """Who is told, and how hard we try."""

    webhooks: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()
    smtp: SmtpConfig | None = None
    max_attempts: int = 6
    backoff_base_s: float = 2.0
    backoff_cap_s: float = 600.0

    def __post_init__(self) -> None:
        for url in self.webhooks:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"alert webhook {url!r}: expected an http(s) URL")
        for address in self.emails:
            if "@" not in address:
                raise ValueError(f"alert e-mail {address!r}: expected an address")
        if self.emails and self.smtp is None:
            raise ValueError("alert e-mails need an SMTP server (--smtp HOST:PORT)")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts {self.max_attempts}: expected >= 1")


@dataclass(frozen=True)
class Delivery:
    """One delivery attempt."""

    url: str  # the target: a URL or an e-mail address
    kind: str  # "alert" or "retraining_request"
    alert_id: str
    ok: bool
    error: str | None = None
    channel: str = "webhook"
    state: str = "delivered"  # after this attempt: delivered, pending (retry), failed
    attempts: int = 1


@dataclass(frozen=True)
class CheckResult:
    readings: int
    transitions: tuple[Transition, ...]
    deliveries: tuple[Delivery, ...] = field(default=())


def alert_view(alert: Alert, stored: StoredAlert | None = None) -> dict[str, Any]:
    return {
        "id": short_id(alert),
        "key": alert.id,
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
        "acknowledged_at": None if stored is None else stored.acknowledged_at,
        "gates_rollout": alert.rule.gates_rollout,
        "retrain": alert.rule.retrain,
    }


def delivery_view(d: AlertDelivery) -> dict[str, Any]:
    return {
        "id": d.id,
        "alert_id": d.alert_id,
        "channel": d.channel,
        "target": d.target,
        "kind": d.kind,
        "state": d.state,
        "attempts": d.attempts,
        "max_attempts": d.max_attempts,
        "next_attempt_at": d.next_attempt_at,
        "last_error": d.last_error,
        "created_at": d.created_at,
        "delivered_at": d.delivered_at,
    }


def post_json(url: str, body: Mapping[str, Any], timeout: float = 5.0) -> None:
    """POST ``body`` as JSON; raises OSError (URLError, HTTPError) unless the answer is 2xx."""
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "User-Agent": "fleetcast-alerts"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310 (configured)
        answer.read()


def email_subject(body: Mapping[str, Any]) -> str:
    if body.get("kind") == "retraining_request":
        return f"[fleetcast] retraining requested: {body.get('model')} {body.get('version')}"
    labels = body.get("labels") or {}
    return (
        f"[fleetcast] {str(body.get('state', '')).upper()} {body.get('severity')}"
        f" {body.get('rule')}: {labels.get('model')} {labels.get('version')}"
    )


def send_email(config: SmtpConfig, to: str, body: Mapping[str, Any]) -> None:
    """One plain-text e-mail carrying the notification's JSON; raises OSError/SMTPException."""
    message = EmailMessage()
    message["From"] = config.sender
    message["To"] = to
    message["Subject"] = email_subject(body)
    message.set_content(json.dumps(body, indent=2, sort_keys=True))
    with smtplib.SMTP(config.host, config.port, timeout=config.timeout_s) as smtp:
        if config.starttls:
            smtp.starttls()
        if config.username:
            smtp.login(config.username, config.password or "")
        smtp.send_message(message)


class AlertService:
    def __init__(
        self,
        monitoring: MonitoringService,
        webhooks: Sequence[str] = (),
        rules_for: Callable[[str], tuple[AlertRule, ...]] = default_rules,
        window_s: float = 900.0,
        send: Callable[[str, Mapping[str, Any]], None] = post_json,
        *,
        notifications: Notifications | None = None,
        audit: AuditService | None = None,
        silent_after_s: float = 900.0,
        availability_lookback_s: float = 86400.0,
        guards: LabelGuards | None = None,
    ) -> None:
        self.notifications = notifications or Notifications(webhooks=tuple(webhooks))
        self.monitoring = monitoring
        self.repos = monitoring.repos
        self.rules_for = rules_for
        self.window_s = window_s
        self.send = send
        self.audit = audit or monitoring.audit
        self.silent_after_s = silent_after_s
        self.availability_lookback_s = availability_lookback_s
        self.guards = guards or LabelGuards()
        self.rules = AlertRuleService(self.repos, self.audit, rules_for, monitoring.clock)
        self._lock = threading.Lock()  # one evaluation at a time in this process

    @property
    def webhooks(self) -> tuple[str, ...]:
        return self.notifications.webhooks

    # -- evaluation

    def evaluate(self, now: float) -> CheckResult:
        """Evaluate every model's rules now; save the changes with their notifications; send."""
        with self._lock:
            readings, evidence = self._readings(now)
            stored = {s.id: s.alert for s in self.repos.alerts.live()}
            books, off = self._books(stored.values(), readings)
            transitions: list[Transition] = []
            for model in sorted(books):
                transitions += books[model].evaluate(readings.get(model, []), now)
            for book in off.values():  # rules no longer in effect: their alerts end now
                transitions += book.evaluate([], now)
            live = [a for book in books.values() for a in book.active.values()]
            resolved = [t.alert for t in transitions if t.alert.state == "resolved"]
            kept = {short_id(a) for a in live} | {short_id(a) for a in resolved}
            gone = [i for i in stored if i not in kept]
            queued = [d for t in transitions for d in self._notifications(t, evidence)]
            self.repos.alerts.save(live + resolved, gone, queued, now)
            count = sum(len(v) for v in readings.values())
        deliveries = self.deliver_due(now)
        return CheckResult(count, tuple(transitions), tuple(deliveries))

    check_drift = evaluate  # the name the first drift-only version had

    def _books(
        self, live: Iterable[Alert], models: Iterable[str]
    ) -> tuple[dict[str, AlertBook], dict[str, AlertBook]]:
        """Per model (with live alerts or readings): the book of its rules in effect holding
        its live alerts, and the book of the live alerts whose rule is no longer in effect
        (disabled or deleted by an operator): evaluated without readings, they resolve
        (pending ones are dropped) instead of firing on under a rule nobody set."""
        overrides = self.rules.stored_by_model()
        books: dict[str, AlertBook] = {}
        off: dict[str, AlertBook] = {}
        for alert in live:
            model = dict(alert.labels).get("model", "")
            if model not in books:
                books[model] = self._book(model, overrides.get(model, []))
            current = {r.name: r for r in books[model].rules}.get(alert.rule.name)
            if current is not None:  # evaluated and told under the rule in effect now
                books[model].active[(current.name, alert.labels)] = replace(alert, rule=current)
            else:
                book = off.setdefault(model, AlertBook(()))
                if alert.rule.name not in {r.name for r in book.rules}:
                    book.rules += (alert.rule,)
                book.active[(alert.rule.name, alert.labels)] = alert
        for model in models:
            if model not in books:
                books[model] = self._book(model, overrides.get(model, []))
        return books, off

    def _book(self, model: str, stored: list[StoredAlertRule]) -> AlertBook:
        rules = self.rules.active(model, stored)
        return AlertBook(tuple(r for r in rules if r.metric in EVALUATED_METRICS))

    def _readings(
        self, now: float
    ) -> tuple[dict[str, list[Reading]], dict[Labels, dict[str, Any]]]:
        readings: dict[str, list[Reading]] = {}
        evidence: dict[Labels, dict[str, Any]] = {}
        for model, version in sorted(self.repos.monitoring.window_counts()):
            answer = self.monitoring.drift(model, version, since=now - self.window_s, until=now)
            for report in answer["reports"]:
                labels = labels_of(
                    {
                        "model": model,
                        "version": version,
                        "group": "all",
                        "profile": str(report["profile_id"]),
                    }
                )
                out = readings.setdefault(model, [])
                if report["requests"]:
                    out.append(Reading("error_rate", float(report["error_rate"]), now, labels))
                if report["status"] == "insufficient":
                    continue  # too few rows: no drift verdict, no drift reading
                evidence[labels] = report
                out.append(Reading("drift_features", float(len(report["drifted"])), now, labels))
                out.append(Reading("drift_share", float(report["drifted_share"]), now, labels))
            self._version_readings(model, version, now, readings, evidence)
        for model, share, silent in self.availability(now):
            labels = labels_of({"model": model, "group": "all"})
            evidence[labels] = {"silent_devices": silent[:100], "silent_share": share}
            readings.setdefault(model, []).append(
                Reading("silent_device_share", share, now, labels)
            )
        return readings, evidence

    def _version_readings(
        self,
        model: str,
        version: str,
        now: float,
        readings: dict[str, list[Reading]],
        evidence: dict[Labels, dict[str, Any]],
    ) -> None:
        """Measured and estimated accuracy (classifiers with captures) and attribution drift
        of one version, under the guards: thin data gives no reading."""
        g = self.guards
        labels = labels_of({"model": model, "version": version, "group": "all"})
        out = readings.setdefault(model, [])
        summary = self.monitoring.label_summary(
            model, version, since=now - g.lookback_s, recent_since=now - self.window_s
        )
        if summary is not None:
            found = accuracy_readings(summary, g, labels, now)
            if found:
                evidence[labels] = summary
                out += found
        latest: dict[str, dict[str, Any]] = {}  # per package: the latest attribution window
        for w in self.repos.insights.windows(
            model_name=model, model_version=version, since=now - g.attribution_lookback_s
        ):
            latest[w.package_sha256] = {**w.drift, "window_start": w.window_start}
        for sha256, drift in sorted(latest.items()):
            package_labels = labels_of(
                {"model": model, "version": version, "group": "all", "package": sha256}
            )
            reading = attribution_reading(drift, package_labels, now)
            if reading is not None:
                evidence[package_labels] = drift
                out.append(reading)

    def availability(self, now: float) -> list[tuple[str, float, list[str]]]:
        """Per model: the share of its recent devices gone silent, and which ones."""
        reporting = self.repos.monitoring.reporting_devices(now - self.availability_lookback_s)
        if not reporting:
            return []
        seen: dict[str, float | None] = {}
        offset: int | None = 0
        while offset is not None:
            page = self.repos.devices.list(status="active", limit=1000, offset=offset)
            seen.update((d.id, d.last_seen) for d in page.items)
            offset = page.next_offset
        out = []
        for model, devices in sorted(reporting.items()):
            share, silent = silent_share(
                {d: seen[d] for d in devices if d in seen}, now, self.silent_after_s
            )
            out.append((model, share, silent))
        return out

    # -- notifications

    def _notifications(
        self, transition: Transition, evidence: Mapping[Labels, Mapping[str, Any]]
    ) -> list[NewDelivery]:
        alert = transition.alert
        if alert.state == "pending":
            return []  # a breach not yet lasting for_s: nobody is told
        bodies: list[tuple[str, dict[str, Any]]] = [
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
                "drift": f"/api/v1/drift?model={model}&version={version}",
            }
            found = evidence.get(alert.labels, {})
            bodies.append(("retraining_request", retraining_request(alert, found, samples)))
        n = self.notifications
        targets = [("webhook", url) for url in n.webhooks] + [("email", a) for a in n.emails]
        return [
            NewDelivery(short_id(alert), channel, target, kind, body, n.max_attempts)
            for channel, target in targets
            for kind, body in bodies
        ]

    def deliver_due(self, now: float | None = None) -> list[Delivery]:
        """Send every notification due now; record each attempt (retry later or fail)."""
        now = time.time() if now is None else now
        out = []
        for d in self.repos.alerts.claim_due(now):  # each due delivery sent by one replica
            error = self._send(d)
            retry_at = None
            if error is not None and d.attempts + 1 < d.max_attempts:
                n = self.notifications
                retry_at = now + backoff_s(d.attempts + 1, n.backoff_base_s, n.backoff_cap_s)
            after = self.repos.alerts.delivery_attempted(d.id, now, error, retry_at)
            if after.state == "failed":
                logger.error(
                    "alert %s: %s to %s failed after %d attempts: %s",
                    d.alert_id, d.kind, d.target, after.attempts, error,
                )  # fmt: skip
            elif error is not None:
                logger.warning(
                    "alert %s: %s to %s failed (attempt %d of %d, next in %.0f s): %s",
                    d.alert_id, d.kind, d.target, after.attempts, d.max_attempts,
                    (retry_at or now) - now, error,
                )  # fmt: skip
            out.append(
                Delivery(d.target, d.kind, d.alert_id, error is None, error, d.channel,
                         after.state, after.attempts)
            )  # fmt: skip
        return out

    def _send(self, d: AlertDelivery) -> str | None:
        try:
            if d.channel == "email":
                smtp = self.notifications.smtp
                if smtp is None:
                    return "no SMTP server configured"
                send_email(smtp, d.target, d.body)
            else:
                self.send(d.target, d.body)
        except (OSError, ValueError, smtplib.SMTPException) as exc:
            return f"{type(exc).__name__}: {exc}"
        return None

    # -- metrics

    def refresh_metrics(self) -> None:
        """Alert, delivery, availability and rollout gauges from the store (before a scrape)."""
        metrics = self.monitoring.metrics
        if metrics is None:
            return
        metrics.observe_alert_counts(self.repos.alerts.counts())
        metrics.observe_deliveries(self.repos.alerts.delivery_counts())
        for model, share, silent in self.availability(self.monitoring.clock()):
            metrics.observe_availability(model, share, len(silent))
        for rollout in self.repos.rollouts.list(limit=ROLLOUTS_IN_METRICS).items:
            metrics.set_rollout_state(rollout.id, rollout.phase, ROLLOUT_PHASES)

    # -- reading and acknowledging

    def alerts(self) -> builtins.list[Alert]:
        """Live alerts (pending and firing), then up to 1,000 resolved ones, newest first."""
        live = [s.alert for s in self.repos.alerts.live()]
        resolved = self.repos.alerts.list(state="resolved", limit=1000).items
        return live + [s.alert for s in resolved]

    def list(
        self,
        *,
        state: str | None = None,
        model: str | None = None,
        version: str | None = None,
        severity: str | None = None,
        rule: str | None = None,
        limit: int = DEFAULT_LIMIT,
        offset: int = 0,
    ) -> Page[StoredAlert]:
        return self.repos.alerts.list(
            state=state, model=model, version=version, severity=severity, rule=rule,
            limit=limit, offset=offset,
        )  # fmt: skip

    def acknowledge(self, alert_id: str, principal: Principal) -> StoredAlert:
        """Acknowledge a firing alert (audited); 404 unknown, 409 unless firing."""
        if not alert_id:
            raise InvalidInput("alert id: expected one")
        before = self.repos.alerts.get(alert_id)
        after = self.repos.alerts.acknowledge(alert_id, principal.name, self.monitoring.clock())
        self.audit.record(
            principal.name,
            "alert.acknowledge",
            f"alert:{alert_id}",
            before={"acknowledged_by": before.alert.acknowledged_by},
            after={"acknowledged_by": after.alert.acknowledged_by},
            detail={"rule": after.alert.rule.name, "labels": dict(after.alert.labels)},
        )
        return after

    def blocks_rollout(self, model: str, version: str) -> builtins.list[Alert]:
        """Firing gate alerts on this version (the rollout engine's promotion check).

        Read from the store: any process (a replica's rollout ticker) sees the same answer.
        """
        return [s.alert for s in self.repos.alerts.firing_gates(model, version)]


class WaveDrift:
    """The rollout drift gate's source (``core/rollout_gates.DriftSource``): the drift of the
    wave's devices' windows of the new version since the wave started, and the alerts.

    Score, on the PSI scale the spec's ``gates.drift.max_score`` uses (0.1 moderate, 0.2
    significant): the largest PSI among the features that *drift* by the decision rule
    (significant after Holm and PSI >= 0.1), 0.0 when none does — PSI alone is not
    evidence at small counts. Rows scored are the samples. A firing alert of a rule that
    gates rollouts on this version (``blocks_rollout``) makes it at least 1.0 (a major
    shift), so an enabled drift gate fails while the alert fires.
    """

    def __init__(self, alerts: AlertService) -> None:
        self.alerts = alerts

    def drift(
        self, model: str, version: str, subjects: Sequence[str], since: float
    ) -> tuple[float, int] | None:
        answer = self.alerts.monitoring.drift(model, version, since=since, devices=subjects)
        scored = [r for r in answer["reports"] if r["status"] != "insufficient"]
        psi = [float(f["psi"]) for r in scored for f in r["features"] if f["status"] == "drift"]
        score = None if not scored else max(psi, default=0.0)
        samples = sum(int(r["rows"]) for r in answer["reports"])
        if self.alerts.blocks_rollout(model, version):
            return max(score or 0.0, 1.0), samples
        return None if score is None else (score, samples)
