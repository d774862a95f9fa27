"""Prometheus metric definitions for monitoring, on one CollectorRegistry per control plane.

Counters carry totals (Prometheus derives rates: ``rate(fleetcast_telemetry_windows_total[5m])``
is the ingest rate); gauges carry the latest evaluation. Labels stay bounded:
model, version, device group, feature (from the manifest), never device ids
except on ``fleetcast_device_last_seen_timestamp_seconds``, whose cardinality
is the fleet's size (drop it with a relabel rule on very large fleets).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from control_plane.core.alerts import Alert
from control_plane.core.drift import DriftReport
from control_plane.core.sketches import WindowAccumulator

logger = logging.getLogger(__name__)

QUANTILES = (0.5, 0.95, 0.99)
ALERT_STATES = ("pending", "firing")


class MonitoringMetrics:
    """The monitoring metrics; call the ``observe_*`` methods, serve :meth:`exposition`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        version = ["model", "version", "group"]
        self.windows = Counter(
            "fleetcast_telemetry_windows", "Telemetry windows ingested", ["model"], registry=r
        )
        self.predictions = Counter(
            "fleetcast_predictions", "Rows scored, per model version and device group", version,
            registry=r,
        )  # fmt: skip
        self.requests = Counter(
            "fleetcast_requests", "Scoring requests (rows may be batched)", version, registry=r
        )
        self.failures = Counter(
            "fleetcast_request_failures", "Failed requests by kind (error, invalid)",
            [*version, "kind"], registry=r,
        )  # fmt: skip
        self.error_rate = Gauge(
            "fleetcast_error_rate", "Failed share of requests over the last evaluation", version,
            registry=r,
        )  # fmt: skip
        self.latency = Gauge(
            "fleetcast_latency_ms", "Latency quantiles from the merged KLL sketch",
            [*version, "quantile"], registry=r,
        )  # fmt: skip
        self.drift_share = Gauge(
            "fleetcast_drift_share", "Share of evaluated features drifting (drift score)", version,
            registry=r,
        )  # fmt: skip
        self.drift_features = Gauge(
            "fleetcast_drift_features", "Features drifting in the last evaluation", version,
            registry=r,
        )  # fmt: skip
        self.feature_psi = Gauge(
            "fleetcast_feature_psi", "PSI of one feature vs the package reference",
            [*version, "feature"], registry=r,
        )  # fmt: skip
        self.feature_status = Gauge(
            "fleetcast_feature_drift_status", "1 drift, 0 no drift, -1 insufficient data",
            [*version, "feature"], registry=r,
        )  # fmt: skip
        self.alerts = Gauge(
            "fleetcast_alerts", "Live alerts by rule, severity and state",
            ["rule", "severity", "state"], registry=r,
        )  # fmt: skip
        self.rollout_state = Gauge(
            "fleetcast_rollout_state", "1 for the rollout's current state", ["rollout", "state"],
            registry=r,
        )  # fmt: skip
        self.ingested_windows = Counter(
            "fleetcast_ingested_windows", "Telemetry windows in the store, per model version",
            ["model", "version"], registry=r,
        )  # fmt: skip
        self.ingested_rows = Counter(
            "fleetcast_ingested_rows", "Rows scored in the stored windows, per model version",
            ["model", "version"], registry=r,
        )  # fmt: skip
        self._ingested: dict[tuple[str, str], tuple[int, int]] = {}
        self.deliveries = Gauge(
            "fleetcast_alert_deliveries", "Alert notifications by channel and state"
            " (pending: due or retrying; failed: attempts exhausted)",
            ["channel", "state"], registry=r,
        )  # fmt: skip
        self.silent_share = Gauge(
            "fleetcast_silent_device_share", "Share of a model's recent devices not heard from",
            ["model"], registry=r,
        )  # fmt: skip
        self.silent_devices = Gauge(
            "fleetcast_silent_devices", "A model's recent devices not heard from", ["model"],
            registry=r,
        )  # fmt: skip
        self.last_seen = Gauge(
            "fleetcast_device_last_seen_timestamp_seconds", "When a device last reported",
            ["device"], registry=r,
        )  # fmt: skip

    def sync_ingest(self, model: str, version: str, windows: int, rows: int) -> None:
        """Raise the per-version ingest counters to the store's totals (never lowers them)."""
        seen_windows, seen_rows = self._ingested.get((model, version), (0, 0))
        if windows > seen_windows:
            self.ingested_windows.labels(model, version).inc(windows - seen_windows)
        if rows > seen_rows:
            self.ingested_rows.labels(model, version).inc(rows - seen_rows)
        self._ingested[(model, version)] = (max(windows, seen_windows), max(rows, seen_rows))

    def observe_window(self, window: Mapping[str, Any], group: str) -> None:
        """Count one ingested telemetry window."""
        labels = (str(window["model_name"]), str(window["model_version"]), group)
        self.windows.labels(labels[0]).inc()
        self.predictions.labels(*labels).inc(int(window.get("rows", 0)))
        self.requests.labels(*labels).inc(int(window.get("requests", 0)))
        for kind in ("errors", "invalid"):
            self.failures.labels(*labels, kind.rstrip("s")).inc(int(window.get(kind, 0)))
        if "device_id" in window and "ended_at" in window:
            self.last_seen.labels(str(window["device_id"])).set(float(window["ended_at"]))

    def observe_merged(self, model: str, version: str, group: str, acc: WindowAccumulator) -> None:
        """Error rate and latency quantiles of a merge of windows."""
        self.error_rate.labels(model, version, group).set(acc.error_rate)
        if not acc.latency.is_empty():
            for q, value in zip(QUANTILES, acc.latency.get_quantiles(list(QUANTILES)), strict=True):
                self.latency.labels(model, version, group, str(q)).set(float(value))

    def observe_drift(self, model: str, version: str, group: str, report: DriftReport) -> None:
        self.drift_share.labels(model, version, group).set(report.drifted_share)
        self.drift_features.labels(model, version, group).set(len(report.drifted))
        codes = {"drift": 1.0, "no_drift": 0.0, "insufficient": -1.0}
        for f in report.features:
            self.feature_psi.labels(model, version, group, f.label).set(f.psi)
            self.feature_status.labels(model, version, group, f.label).set(codes[f.status])

    def observe_alerts(self, alerts: Iterable[Alert]) -> None:
        """Set the live alert counts (rules with none left go to 0)."""
        counts: dict[tuple[str, str, str], int] = {}
        for alert in alerts:
            key = (alert.rule.name, alert.rule.severity, alert.state)
            counts[key] = counts.get(key, 0) + 1
        self.observe_alert_counts(counts)

    def observe_alert_counts(self, counts: Mapping[tuple[str, str, str], int]) -> None:
        """Live alerts per (rule, severity, state), as the store counts them."""
        for rule, severity, state in list(self._alert_keys()):
            self.alerts.labels(rule, severity, state).set(0)
        for (rule, severity, state), n in counts.items():
            self.alerts.labels(rule, severity, state).set(n)

    def _alert_keys(self) -> Iterable[tuple[str, str, str]]:
        for metric in self.alerts.collect():
            for sample in metric.samples:
                yield sample.labels["rule"], sample.labels["severity"], sample.labels["state"]

    def observe_deliveries(self, counts: Mapping[tuple[str, str], int]) -> None:
        for state in ("pending", "delivered", "failed"):
            for channel in ("webhook", "email"):
                self.deliveries.labels(channel, state).set(counts.get((channel, state), 0))

    def observe_availability(self, model: str, share: float, silent: int) -> None:
        self.silent_share.labels(model).set(share)
        self.silent_devices.labels(model).set(silent)

    def set_rollout_state(self, rollout: str, state: str, states: Sequence[str]) -> None:
        for s in states:
            self.rollout_state.labels(rollout, s).set(1.0 if s == state else 0.0)

    def exposition(self) -> bytes:
        """The registry in Prometheus text format (what ``/metrics`` serves)."""
        return generate_latest(self.registry)
