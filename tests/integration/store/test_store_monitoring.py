"""Typed ingest on both backends: real telemetry windows decoded once into indexed rows."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from control_plane.errors import NotFound
from control_plane.services.audit import AuditService
from control_plane.services.devices import DeviceService
from control_plane.services.ingest import IngestService
from control_plane.services.monitoring import MonitoringService
from control_plane.services.tokens import Principal
from control_plane.store.records import NewDevice, Package
from control_plane.store.sql.store import SqlRepositories
from edge_agent.core.telemetry import ModelTelemetry, TelemetryConfig
from tests.unit.control_plane.monitoring_support import monitored_manifest

OPERATOR = Principal("ops", "operator")


def _data(seed: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, (2000, 4)).astype(np.float32)
    x[:, 0] += shift
    logits = x[:, :3] * 2.0
    scores = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return x, scores.astype(np.float32)


def _windows(repos: SqlRepositories) -> tuple[Any, list[dict[str, Any]]]:
    """A package in the catalog and two real windows of it: clean, then shifted feature 0."""
    x, scores = _data(0)
    manifest = monitored_manifest(x, scores)
    repos.packages.put(
        Package(
            "a" * 64, manifest.package_id, "digits", "1", manifest.profile.id, 1, 1, "/p",
            manifest.model_dump(mode="json"), 1.0,
        )
    )  # fmt: skip
    telemetry = ModelTelemetry(manifest, TelemetryConfig(capture_rate=1.0, max_captures=8), seed=1)
    windows = []
    for seq, shift in ((1, 0.0), (2, 1.5)):
        xs, ss = _data(seq, shift)
        for i in range(0, 600, 3):
            telemetry.record({"x": xs[i : i + 3]}, {"probs": ss[i : i + 3]}, 0.002)
        windows.append(telemetry.close_window("cam-1", seq))
    return manifest, windows


def _ingest(repos: SqlRepositories) -> IngestService:
    repos.devices.add(NewDevice("cam-1", "h"), at=1.0)
    return IngestService(repos, DeviceService(repos))


def test_windows_are_indexed_once_beside_the_raw_upload(repos: SqlRepositories) -> None:
    ingest = _ingest(repos)
    manifest, windows = _windows(repos)
    items = [(w["sequence"], "telemetry_window", json.dumps(w)) for w in windows]
    first = ingest.ingest("cam-1", items, "grpc")
    again = ingest.ingest("cam-1", items, "mqtt")  # a resend: acked again, stored once
    assert first.acked == again.acked == [1, 2] and not first.rejected
    stored = repos.monitoring.windows(model_name="digits")
    assert [(w.seq, w.package_sha256, w.profile_id) for w in stored] == [
        (1, "a" * 64, manifest.profile.id),
        (2, "a" * 64, manifest.profile.id),
    ]
    assert [w.rows for w in stored] == [600, 600]
    assert stored[0].histograms["inputs"] == windows[0]["inputs"]
    assert stored[0].bucket_start == pytest.approx(windows[0]["started_at"] // 3600 * 3600)
    assert len(ingest.all(kind="telemetry_window")) == 2  # the raw uploads too
    assert repos.monitoring.window_counts() == {("digits", "1"): (2, 1200)}
    assert repos.monitoring.windows(model_name="digits", model_version="2") == []
    ids = [c["prediction_id"] for c in windows[0]["captures"]]
    assert len(ids) == 8
    assert {c.prediction_id for c in repos.monitoring.captures(ids)} == set(ids)


def test_every_window_of_an_upload_is_indexed_whatever_the_statement_split(
    repos: SqlRepositories,
) -> None:
    """Windows go in INSERTs of WINDOW_ROWS rows plus one for the rest: an odd count in one
    upload, with one window already stored, indexes each new window once."""
    ingest = _ingest(repos)
    _, windows = _windows(repos)
    more = [{**windows[i % 2], "sequence": seq} for i, seq in enumerate(range(3, 9))]
    items = [(w["sequence"], "telemetry_window", json.dumps(w)) for w in windows + more]
    assert ingest.ingest("cam-1", items[:1], "grpc").acked == [1]
    assert ingest.ingest("cam-1", items, "grpc").acked == list(range(1, 9))  # 7 new: odd
    stored = sorted(repos.monitoring.windows(model_name="digits"), key=lambda w: w.seq)
    assert [w.seq for w in stored] == list(range(1, 9))
    assert [w.histograms["inputs"] for w in stored[2:]] == [
        windows[i % 2]["inputs"] for i in range(6)
    ]
    assert repos.monitoring.window_counts() == {("digits", "1"): (8, 8 * 600)}


def test_bad_windows_are_rejected_by_sequence_with_the_reason(repos: SqlRepositories) -> None:
    ingest = _ingest(repos)
    _, windows = _windows(repos)
    bad = {**windows[0], "sequence": 5, "rows": -1}
    old = {k: v for k, v in windows[1].items() if k not in ("package_id", "release")}
    old["sequence"] = 6
    status = {"kind": "status", "device_id": "cam-1", "sequence": 7, "event": "installed"}
    no_model = {k: v for k, v in windows[0].items() if k != "model_name"} | {"sequence": 8}
    result = ingest.ingest(
        "cam-1",
        [
            (5, "telemetry_window", json.dumps(bad)),
            (6, "telemetry_window", json.dumps(old)),
            (7, "status", json.dumps(status)),
            (8, "telemetry_window", json.dumps(no_model)),
        ],
        "grpc",
    )
    assert result.acked == [6, 7] and result.rejected == [5, 8]
    assert result.errors[0].startswith("sequence 5: not a valid telemetry_window: rows")
    assert result.errors[1].startswith("sequence 8: not a valid telemetry_window: model_name")
    (older,) = repos.monitoring.windows(model_name="digits")  # an older agent's window decodes
    assert (older.seq, older.package_id, older.package_sha256) == (6, None, None)
    assert sorted(u.seq for u in ingest.all()) == [6, 7]  # nothing of the rejected ones stored


def test_drift_feedback_and_accuracy_over_the_store(repos: SqlRepositories) -> None:
    ingest = _ingest(repos)
    _, windows = _windows(repos)
    ingest.ingest(
        "cam-1", [(w["sequence"], "telemetry_window", json.dumps(w)) for w in windows], "grpc"
    )
    monitoring = MonitoringService(repos, AuditService(repos.audit))
    first = windows[0]["started_at"]
    clean = monitoring.drift("digits", "1", since=first, until=windows[1]["started_at"])
    (report,) = clean["reports"]
    assert report["windows"] == 1 and report["status"] == "no_drift"
    both = monitoring.drift("digits", "1", device_id="cam-1")
    (merged,) = both["reports"]
    assert merged["windows"] == 2 and merged["rows"] == 1200  # histograms added exactly
    assert merged["status"] == "drift" and "x/x[0]" in merged["drifted"]
    assert not {"x/x[1]", "x/x[2]", "x/x[3]"} & set(merged["drifted"])  # unshifted: quiet
    rows = {f["key"]: f["rows"] for f in merged["features"]}
    assert rows["x/x[1]"] == 1200
    ids = [c["prediction_id"] for c in windows[0]["captures"]]
    labels = [(pid, 0.0) for pid in ids] + [("nobody-scored-this", 1.0)]
    result = monitoring.add_feedback(labels, OPERATOR)
    assert (result.received, result.matched, result.unknown_ids) == (9, 8, ("nobody-scored-this",))
    assert repos.audit.list(action="feedback.add").items[0].actor == "ops"
    accuracy = monitoring.accuracy("digits", "1", bucket_s=1e9)
    assert accuracy["labelled"] == 8 and accuracy["captures"] == 16
    (bucket,) = accuracy["buckets"]
    predicted = [int(np.argmax(c["outputs"]["probs"][0])) for c in windows[0]["captures"]]
    assert bucket["accuracy"] == pytest.approx(np.mean(np.array(predicted) == 0))
    with pytest.raises(NotFound):
        monitoring.accuracy("digits", "7")


def test_captured_inputs_explanations_and_attribution_windows_round_trip(
    repos: SqlRepositories,
) -> None:
    """Migration 0006 on both backends: inputs kept beside outputs, explanations stored once,
    attribution windows upserted, the latest package per device for lineage."""
    from control_plane.store.records import AttributionWindow

    ingest = _ingest(repos)
    _, windows = _windows(repos)
    ingest.ingest(
        "cam-1", [(w["sequence"], "telemetry_window", json.dumps(w)) for w in windows], "grpc"
    )
    capture = windows[0]["captures"][0]
    (stored,) = repos.insights.capture(capture["prediction_id"])
    assert stored.inputs == capture["inputs"] and stored.outputs == capture["outputs"]
    at = capture["at"]
    assert repos.insights.capture_counts(at - 1e6, at + 1e6) == {"a" * 64: 16}
    assert repos.insights.capture_counts(0.0, 1.0) == {}
    ids = repos.insights.capture_ids("a" * 64, at - 1e6, at + 1e6)
    assert capture["prediction_id"] in ids and len(ids) == 16
    assert repos.insights.running_packages() == [
        ("cam-1", "digits", "a" * 64, windows[1]["ended_at"])
    ]

    pid = capture["prediction_id"]
    assert repos.insights.explanation(pid, "cam-1") is None
    repos.insights.put_explanation(pid, "cam-1", "a" * 64, {"base_value": 0.5}, 10.0)
    repos.insights.put_explanation(pid, "cam-1", "a" * 64, {"base_value": 0.9}, 11.0)  # kept once
    assert repos.insights.explanation(pid, "cam-1") == {"base_value": 0.5}

    repos.insights.put_reference("a" * 64, 8, {"f0": 0.3, "f1": 0.1}, 10.0)
    assert repos.insights.reference("a" * 64) == (8, {"f0": 0.3, "f1": 0.1})
    window = AttributionWindow(
        "a" * 64, 3600.0, 3600.0, "digits", "1", 40, 16, {"f0": 0.2}, {"status": "no_drift"}, 12.0
    )
    repos.insights.put_window(window)
    repos.insights.put_window(
        AttributionWindow(**{**window.__dict__, "captures": 60, "drift": {"status": "drift"}})
    )
    (again,) = repos.insights.windows(model_name="digits", model_version="1")
    assert again.captures == 60 and again.drift == {"status": "drift"}
    assert repos.insights.window_starts("a" * 64) == {3600.0}
    assert repos.insights.windows(model_name="digits", since=7200.0) == []
