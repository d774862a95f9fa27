"""Real telemetry windows -> merge -> drift -> alerts -> Prometheus text, parsed back."""

from __future__ import annotations

import numpy as np
from monitoring_support import monitored_manifest
from prometheus_client.parser import text_string_to_metric_families

from control_plane.core.alerts import AlertBook, Reading, default_rules, labels_of
from control_plane.core.drift import evaluate
from control_plane.core.sketches import group_windows, reference_features
from control_plane.monitoring.metrics import MonitoringMetrics
from edge_agent.core.telemetry import ModelTelemetry


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def test_windows_drift_and_alerts_parse_back_from_the_exposition():
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(6, 3))
    x_ref = rng.normal(size=(4000, 6)).astype(np.float32)
    manifest = monitored_manifest(x_ref, _softmax(x_ref @ weights))
    windows = []
    for device, shift in (("d1", 0.0), ("d2", 1.0)):
        telemetry = ModelTelemetry(manifest, clock=lambda: 1000.0)
        for _ in range(50):  # 50 calls of 10 rows
            x = rng.normal(shift, 1.0, size=(10, 6)).astype(np.float32)
            telemetry.record({"x": x}, {"probs": _softmax(x @ weights)}, latency_s=0.002)
        for _ in range(5):
            telemetry.record_failure("error", 0.001)
        windows.append(telemetry.close_window(device, 1))
    merged = group_windows(windows, {"d1": "eu", "d2": "us"})
    metrics = MonitoringMetrics()
    reference = reference_features(manifest.reference)
    book = AlertBook(default_rules("digits"))
    readings = []
    for window in windows:
        metrics.observe_window(window, "eu" if window["device_id"] == "d1" else "us")
    for (model, version, group), acc in merged.items():
        metrics.observe_merged(model, version, group, acc)
        report = evaluate(reference, acc.histograms)
        metrics.observe_drift(model, version, group, report)
        labels = labels_of({"model": model, "version": version, "group": group})
        readings.append(Reading("error_rate", acc.error_rate, 1000.0, labels))
        readings.append(Reading("drift_features", len(report.drifted), 1000.0, labels))
    book.evaluate(readings, now=1000.0)
    metrics.observe_alerts(book.active.values())
    metrics.set_rollout_state("r-1", "canary", ["planned", "canary", "promoted", "rolled_back"])

    families = {f.name: f for f in text_string_to_metric_families(metrics.exposition().decode())}
    samples = {
        (f.name, s.name, tuple(sorted(s.labels.items()))): s.value
        for f in families.values()
        for s in f.samples
    }

    def value(family: str, sample: str, **labels: str) -> float:
        return samples[(family, sample, tuple(sorted(labels.items())))]

    assert (
        value("fleetcast_telemetry_windows", "fleetcast_telemetry_windows_total", model="digits")
        == 2
    )
    eu = {"model": "digits", "version": "1", "group": "eu"}
    us = {**eu, "group": "us"}
    assert value("fleetcast_predictions", "fleetcast_predictions_total", **eu) == 500
    assert value("fleetcast_error_rate", "fleetcast_error_rate", **eu) == 5 / 55
    assert value("fleetcast_drift_share", "fleetcast_drift_share", **eu) == 0.0
    assert (
        value("fleetcast_drift_share", "fleetcast_drift_share", **us) > 0.5
    )  # every input shifted 1 sigma
    assert (
        value(
            "fleetcast_feature_drift_status",
            "fleetcast_feature_drift_status",
            **us,
            feature="x/x[0]",
        )
        == 1
    )
    p95 = value("fleetcast_latency_ms", "fleetcast_latency_ms", **eu, quantile="0.95")
    assert 1.9 < p95 < 2.1
    assert (
        value(
            "fleetcast_alerts",
            "fleetcast_alerts",
            rule="error_rate",
            severity="critical",
            state="pending",
        )
        == 2
    )
    assert (
        value("fleetcast_rollout_state", "fleetcast_rollout_state", rollout="r-1", state="canary")
        == 1
    )
    assert (
        value(
            "fleetcast_device_last_seen_timestamp_seconds",
            "fleetcast_device_last_seen_timestamp_seconds",
            device="d2",
        )
        == 1000.0
    )
