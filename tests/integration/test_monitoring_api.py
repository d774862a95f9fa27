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
