"""The monitoring routes over a real compiled package: windows from the digits MLP's own
runtime ingested into a SQLite file store, then drift, feedback, accuracy and /metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from control_plane.api import ApiOptions, create_api
from control_plane.core.accuracy import ConfidenceCalibrator
from control_plane.services.devices import DeviceService
from control_plane.services.ingest import IngestService
from control_plane.services.packages import PackageService
from control_plane.services.tokens import Principal, TokenService
from control_plane.settings import Settings
from control_plane.signing import load_fleet_public_key
from control_plane.store.factory import open_repositories
from control_plane.store.records import NewDevice
from edge_agent.core.telemetry import TelemetryConfig
from edge_agent.runtime import open_model

pytestmark = pytest.mark.slow


def _samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_drift_feedback_accuracy_and_metrics_from_real_windows(
    tmp_path: Path, package: Path, keys: Any, digits_mlp: Any
) -> None:
    repos = open_repositories(str(tmp_path / "store.db"))
    settings = Settings(data_dir=tmp_path / "cp")
    app = create_api(repos, settings, ApiOptions())
    client = app.test_client()
    tokens = TokenService(repos, app.extensions["fleetcast.api"].audit)
    admin = Principal("test", "admin")
    bearer = {r: tokens.create(f"{r}-token", r, admin)[1] for r in ("viewer", "operator")}

    def call(method: str, url: str, who: str = "viewer", **kwargs: Any) -> Any:
        answer = client.open(
            url, method=method, headers={"Authorization": f"Bearer {bearer[who]}"}, **kwargs
        )
        assert answer.status_code == 200, answer.get_data(as_text=True)
        return answer.json

    public_key = load_fleet_public_key(keys.public)
    PackageService(repos, public_key, tmp_path / "catalog").register(package, "test")
    repos.devices.add(NewDevice("cam-1", "h"), at=1.0)
    ingest = IngestService(repos, DeviceService(repos))

    model = open_model(package, keys.public, telemetry=TelemetryConfig(1.0, max_captures=500))
    assert model.telemetry is not None
    name, version = model.manifest.model_name, model.manifest.model_version
    input_name = model.manifest.signature.inputs[0].name
    x = np.asarray(digits_mlp.x_validation, dtype=np.float32)
    y = np.asarray(digits_mlp.y_validation)
    ids = [model.predict_with_id({input_name: x[i : i + 1]})[1] for i in range(len(x))]
    clean = model.telemetry.close_window("cam-1", 1)
    for i in range(len(x)):  # brighter and noisier digits: covariate shift
        noise = np.random.default_rng(i).normal(0, 2, x[i : i + 1].shape)
        shifted = np.clip(x[i : i + 1] * 1.5 + noise, 0, 16).astype(np.float32)
        model.predict({input_name: shifted})
    drifted = model.telemetry.close_window("cam-1", 2)
    windows = [clean, drifted]
    result = ingest.ingest(
        "cam-1", [(w["sequence"], "telemetry_window", json.dumps(w)) for w in windows], "grpc"
    )
    assert result.acked == [1, 2], result.errors

    quiet = call(
        "GET", f"/api/v1/drift?model={name}&version={version}&until={drifted['started_at']}"
    )
    (report,) = quiet["reports"]
    assert report["windows"] == 1 and report["rows"] == len(x)
    assert report["drifted_share"] <= 0.05 and report["status"] != "insufficient"
    assert report["package_sha256"] == repos.packages.list(model_name=name).items[0].sha256
    loud = call(
        "GET", f"/api/v1/drift?model={name}&version={version}&since={drifted['started_at']}"
    )
    assert loud["reports"][0]["drifted_share"] > 0.3
    merged = call("GET", f"/api/v1/drift?model={name}&device=cam-1")
    assert merged["windows"] == 2 and merged["reports"][0]["rows"] == 2 * len(x)
    assert merged["unevaluated"] == []

    labels = [{"prediction_id": p, "label": int(v)} for p, v in zip(ids, y, strict=True)]
    fed = call(
        "POST",
        "/api/v1/feedback",
        "operator",
        json={"labels": [*labels, {"prediction_id": "never-scored", "label": 3}]},
    )
    assert fed["matched"] == len(ids) and fed["unknown_ids"] == ["never-scored"]
    accuracy = call("GET", f"/api/v1/accuracy?model={name}&version={version}")
    assert accuracy["labelled"] == len(ids) and accuracy["task"] == "classification"
    count = sum(b["count"] for b in accuracy["buckets"])
    measured = sum(b["accuracy"] * b["count"] for b in accuracy["buckets"]) / count
    assert count == len(ids)
    assert measured == pytest.approx(digits_mlp.fp32_accuracy, abs=0.03)

    text = client.get("/metrics").get_data(as_text=True)
    key = (("model", name), ("version", version))
    assert _samples(text, "fleetcast_ingested_windows_total")[key] == 2
    assert _samples(text, "fleetcast_ingested_rows_total")[key] == 2 * len(x)
    share = _samples(text, "fleetcast_drift_share")
    assert share[(("group", "cam-1"), *key)] == merged["reports"][0]["drifted_share"]
    psi = _samples(text, "fleetcast_feature_psi")
    assert len([k for k in psi if ("group", "cam-1") in k]) == len(merged["reports"][0]["features"])
    repos.close()


def test_accuracy_per_device_group_measured_and_estimated(
    tmp_path: Path, package: Path, keys: Any, digits_mlp: Any
) -> None:
    """Two sites score the same labelled digits, one of them shifted: accuracy per site."""
    repos = open_repositories(str(tmp_path / "store.db"))
    app = create_api(repos, Settings(data_dir=tmp_path / "cp"), ApiOptions())
    client = app.test_client()
    tokens = TokenService(repos, app.extensions["fleetcast.api"].audit)
    admin = Principal("test", "admin")
    bearer = {r: tokens.create(f"{r}-token", r, admin)[1] for r in ("viewer", "operator")}

    def call(method: str, url: str, who: str = "viewer", status: int = 200, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {bearer[who]}"}
        answer = client.open(url, method=method, headers=headers, **kw)
        assert answer.status_code == status, answer.get_data(as_text=True)
        return answer.json

    PackageService(repos, load_fleet_public_key(keys.public), tmp_path / "catalog").register(
        package, "test"
    )
    ingest = IngestService(repos, DeviceService(repos))
    model = open_model(package, keys.public, telemetry=TelemetryConfig(1.0, max_captures=500))
    assert model.telemetry is not None
    name, version = model.manifest.model_name, model.manifest.model_version
    input_name = model.manifest.signature.inputs[0].name
    output_name = model.manifest.signature.outputs[0].name
    x = np.asarray(digits_mlp.x_validation, dtype=np.float32)
    y = np.asarray(digits_mlp.y_validation)
    hits: dict[str, list[bool]] = {}
    scores: dict[str, list[np.ndarray]] = {}
    labels = []
    for device, site, noise in (("cam-b", "berlin", 0.0), ("cam-p", "paris", 6.0)):
        repos.devices.add(NewDevice(device, "h", labels={"site": site}), at=1.0)
        for i in range(len(x)):  # paris: a noisy sensor
            grain = np.random.default_rng(i).normal(0, noise, x[i : i + 1].shape)
            row = np.clip(x[i : i + 1] + grain, 0, 16).astype(np.float32)
            outputs, pid = model.predict_with_id({input_name: row})
            hits.setdefault(site, []).append(int(np.argmax(outputs[output_name])) == int(y[i]))
            scores.setdefault(site, []).append(np.asarray(outputs[output_name][0], np.float64))
            labels.append({"prediction_id": pid, "label": int(y[i])})
        window = model.telemetry.close_window(device, 1)
        sent = ingest.ingest(device, [(1, "telemetry_window", json.dumps(window))], "grpc")
        assert sent.acked == [1], sent.errors
    berlin, paris = (float(np.mean(hits[s])) for s in ("berlin", "paris"))
    assert paris < berlin - 0.1  # the shift costs accuracy: the groups must differ
    labelled = labels[: len(x)] + labels[len(x) :: 2]  # paris: half its labels came back
    assert call("POST", "/api/v1/feedback", "operator", json={"labels": labelled})["matched"] == (
        len(labelled)
    )

    base = f"/api/v1/accuracy?model={name}&version={version}&bucket_seconds=31536000"
    split = call("GET", f"{base}&group_by=site")
    assert split["captures"] == 2 * len(x) and split["labelled"] == len(labelled)
    summary = {g["group"]: g for g in split["groups"]}
    assert set(summary) == {"site=berlin", "site=paris"}
    assert summary["site=berlin"]["labelled"] == len(x)
    assert summary["site=berlin"]["accuracy"] == pytest.approx(berlin)
    assert summary["site=paris"]["labelled"] == len(x[::2])
    assert summary["site=paris"]["accuracy"] == pytest.approx(float(np.mean(hits["paris"][::2])))
    assert {b["group"] for b in split["buckets"]} == {"site=berlin", "site=paris"}
    assert sum(b["count"] for b in split["buckets"] if b["group"] == "site=paris") == len(x[::2])
    estimated = {b["group"]: b for b in split["estimated"]["buckets"]}
    assert estimated["site=paris"]["count"] == len(x)  # every capture, labelled or not
    assert model.manifest.calibration is not None
    calibrator = ConfidenceCalibrator.from_manifest(model.manifest.calibration)
    for site in ("berlin", "paris"):  # the estimate of each group over its own captures
        expected, error = calibrator.estimate(np.array(scores[site]))
        assert estimated[f"site={site}"]["accuracy"] == pytest.approx(expected)
        assert estimated[f"site={site}"]["standard_error"] == pytest.approx(error)
    assert summary["site=paris"]["estimated_accuracy"] == estimated["site=paris"]["accuracy"]

    only = call("GET", f"{base}&group=site%3Dparis")
    assert only["captures"] == len(x) and only["labelled"] == len(x[::2])
    (line,) = only["groups"]
    assert line["group"] == "site=paris" and line["accuracy"] == summary["site=paris"]["accuracy"]
    device = call("GET", f"{base}&device=cam-b")
    assert [g["group"] for g in device["groups"]] == ["cam-b"] and device["captures"] == len(x)
    assert call("GET", f"{base}&group=site%3Dlyon")["groups"] == []

    bad = call("GET", f"{base}&group=site", status=422)
    assert "group" in json.dumps(bad)
    repos.close()
