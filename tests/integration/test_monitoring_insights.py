"""Explanations, attribution drift, drift per device group, estimated accuracy and lineage
over the routes, from the compiled digits MLP's own runtime: two labelled devices (a clean
site and a site whose digits are brighter and noisier) upload windows with captures."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from openlineage.client.event_v2 import (
    InputDataset,
    Job,
    OutputDataset,
    Run,
    RunEvent,
    RunState,
)

from control_plane.api import ApiOptions, create_api
from control_plane.services.devices import DeviceService
from control_plane.services.explanations import ExplainWorker
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


def _scored(model: Any, x: np.ndarray, device: str, seq: int) -> tuple[list[str], dict[str, Any]]:
    name = model.manifest.signature.inputs[0].name
    ids = [model.predict_with_id({name: x[i : i + 1]})[1] for i in range(len(x))]
    return ids, model.telemetry.close_window(device, seq)


def test_explanations_groups_estimates_and_lineage_over_the_routes(
    tmp_path: Path, package: Path, keys: Any, digits_mlp: Any
) -> None:
    repos = open_repositories(str(tmp_path / "store.db"))
    settings = Settings(data_dir=tmp_path / "cp", public_key=keys.public)
    app = create_api(repos, settings, ApiOptions(explain_interval=0))
    context = app.extensions["fleetcast.api"]
    client = app.test_client()
    tokens = TokenService(repos, context.audit)
    bearer = tokens.create("viewer-token", "viewer", Principal("test", "admin"))[1]
    operator = tokens.create("operator-token", "operator", Principal("test", "admin"))[1]

    def get(url: str, status: int = 200) -> Any:
        answer = client.get(url, headers={"Authorization": f"Bearer {bearer}"})
        assert answer.status_code == status, answer.get_data(as_text=True)
        return answer.json

    stored = PackageService(repos, load_fleet_public_key(keys.public), tmp_path / "catalog")
    row = stored.register(package, "test")
    repos.devices.add(NewDevice("cam-b1", "h", labels={"site": "berlin"}), at=1.0)
    repos.devices.add(NewDevice("cam-m1", "h", labels={"site": "munich"}), at=1.0)
    ingest = IngestService(repos, DeviceService(repos))

    model = open_model(package, keys.public, telemetry=TelemetryConfig(1.0, max_captures=500))
    manifest = model.manifest
    name, version = manifest.model_name, manifest.model_version
    x = np.asarray(digits_mlp.x_validation, dtype=np.float32)
    y = np.asarray(digits_mlp.y_validation)
    clean_ids, clean = _scored(model, x, "cam-m1", 1)
    noise = np.random.default_rng(0).normal(0, 2, x.shape)
    shifted = np.clip(x * 1.5 + noise, 0, 16).astype(np.float32)
    shifted_ids, drifted = _scored(model, shifted, "cam-b1", 1)

    def upload(device: str, window: dict[str, Any]) -> None:
        result = ingest.ingest(device, [(1, "telemetry_window", json.dumps(window))], "grpc")
        assert result.acked == [1], result.errors

    # -- estimated accuracy beside the measured one (the clean site's labels)
    upload("cam-m1", clean)
    labels = [{"prediction_id": p, "label": int(v)} for p, v in zip(clean_ids, y, strict=True)]
    fed = client.post(
        "/api/v1/feedback", json={"labels": labels}, headers={"Authorization": f"Bearer {operator}"}
    )
    assert fed.status_code == 200 and fed.json["matched"] == len(x)
    accuracy = get(f"/api/v1/accuracy?model={name}&version={version}&bucket_seconds=86400")
    estimated = accuracy["estimated"]
    assert estimated["kind"] == "estimated" and estimated["calibrated"] is True
    assert manifest.calibration is not None and manifest.calibration.rows == len(y)
    measured = sum(b["accuracy"] * b["count"] for b in accuracy["buckets"]) / len(x)
    guess = sum(b["accuracy"] * b["count"] for b in estimated["buckets"]) / len(x)
    assert measured == pytest.approx(manifest.calibration.accuracy, abs=0.01)
    assert abs(guess - measured) <= 0.02, (guess, measured)
    upload("cam-b1", drifted)

    # -- drift per device-label group
    grouped = get(f"/api/v1/drift?model={name}&version={version}&group_by=site&step_seconds=60")
    by_group = {r["group"]: r for r in grouped["reports"]}
    assert set(by_group) == {"site=berlin", "site=munich"}
    assert by_group["site=berlin"]["drifted_share"] > 0.3
    assert by_group["site=munich"]["drifted_share"] <= 0.05
    assert by_group["site=munich"]["rows"] == len(x)
    (step,) = by_group["site=berlin"]["sliding"]
    assert step["status"] == "drift" and step["steps_merged"] == 1
    only = get(f"/api/v1/drift?model={name}&group=site=munich")
    assert [r["group"] for r in only["reports"]] == ["site=munich"] and only["windows"] == 1
    bad = client.get(
        f"/api/v1/drift?model={name}&group=site", headers={"Authorization": f"Bearer {bearer}"}
    )
    assert bad.status_code == 422 and "group" in bad.get_data(as_text=True)

    # -- one prediction's explanation: SHAP additivity, through the package's runtime
    first = get(f"/api/v1/predictions/{clean_ids[0]}/explanation")
    assert first["cached"] is False and first["device_id"] == "cam-m1"
    assert first["package_sha256"] == row.sha256 and len(first["attributions"]) == x.shape[1]
    total = sum(a["shap"] for a in first["attributions"]) + first["base_value"]
    assert total == pytest.approx(first["prediction"], abs=1e-4)
    assert first["additivity"]["holds"] is True
    assert first["prediction"] == pytest.approx(first["captured_output"], abs=1e-4)
    input_name = manifest.signature.inputs[0].name
    scores = model.predict({input_name: x[:1]})[manifest.signature.outputs[0].name]
    assert first["output_index"] == int(np.argmax(scores))
    shap = [abs(a["shap"]) for a in first["attributions"]]
    assert shap == sorted(shap, reverse=True)
    again = get(f"/api/v1/predictions/{clean_ids[0]}/explanation")
    assert again["cached"] is True and again["attributions"] == first["attributions"]
    missing = client.get(
        "/api/v1/predictions/never-scored-42/explanation",
        headers={"Authorization": f"Bearer {bearer}"},
    )
    assert missing.status_code == 404 and missing.mimetype == "application/problem+json"
    assert "never-scored-42" in missing.json["detail"]

    # -- the background aggregation (one tick), within its budget, and attribution drift
    budget = context.explanations.options.budget
    later = clean["ended_at"] + 2 * 3600
    context.explanations.clock = lambda: later  # the capture hour has closed
    worker = ExplainWorker(context.explanations, interval=0.05)  # what serve_http starts
    worker.start()
    try:
        deadline = time.monotonic() + 120
        while not repos.insights.windows(model_name=name) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        worker.stop()
    assert context.explanations.aggregate(now=later).windows == 0  # nothing new: no rework
    view = get(f"/api/v1/attributions?model={name}&version={version}")
    (entry,) = view["packages"]
    assert entry["reference"]["rows_explained"] == len(manifest.test_vectors.inputs[input_name])
    (window,) = entry["windows"]
    assert window["captures"] == 2 * len(x) and window["rows_explained"] == budget.max_rows
    assert set(window["mean_abs_shap"]) == set(entry["reference"]["mean_abs_shap"])
    assert window["attribution_drift"]["status"] in ("drift", "no_drift")
    assert entry["status"] == window["attribution_drift"]["status"]
    beside = get(f"/api/v1/drift?model={name}&version={version}")["reports"][0]
    assert beside["attribution_drift"]["status"] == entry["status"]  # beside data drift
    assert beside["attribution_drift"]["window_start"] == window["window_start"]

    # -- lineage both ways, and the OpenLineage export
    dataset = next(d for d in manifest.lineage.datasets if d.role == "calibration")
    down = get(f"/api/v1/lineage?dataset={dataset.sha256}")
    assert {n["id"] for n in down["devices_running"]} == {"device:cam-b1", "device:cam-m1"}
    assert f"package:{manifest.package_id}" in {n["id"] for n in down["nodes"]}
    up = get(f"/api/v1/lineage?prediction={clean_ids[0]}")
    kinds = {n["kind"]: n for n in up["nodes"]}
    assert kinds["package"]["attrs"]["recipe"] == manifest.recipe
    assert kinds["package"]["attrs"]["profile"] == manifest.profile.id
    assert kinds["package"]["attrs"]["fidelity_passed"] == manifest.fidelity.passed
    assert kinds["model_version"]["id"] == f"model_version:{name}@{version}"
    assert {n["attrs"]["name"] for n in up["nodes"] if n["kind"] == "dataset"} == {
        d.name for d in manifest.lineage.datasets
    }
    assert {n["kind"] for n in up["downstream"]} == {"feedback", "explanation"}
    unlabelled = get(f"/api/v1/lineage?prediction={shifted_ids[-1]}")
    assert unlabelled["downstream"] == [] or {n["kind"] for n in unlabelled["downstream"]} == {
        "explanation"
    }
    assert get(f"/api/v1/lineage?dataset={'f' * 64}", 404)["detail"].endswith(
        f"'{'f' * 64}' is known"
    )
    from_device = get("/api/v1/lineage?device=cam-b1")
    assert f"package:{manifest.package_id}" in {n["id"] for n in from_device["nodes"]}

    events = get(f"/api/v1/lineage/openlineage?model={name}")["events"]
    jobs = {e["job"]["name"] for e in events}
    assert f"compile.{name}" in jobs and "drift" in jobs  # the attribution window's report
    for event in events:  # every event rebuilt by the client's own validating models
        RunEvent(
            eventType=RunState(event["eventType"]),
            eventTime=event["eventTime"],
            producer=event["producer"],
            run=Run(runId=event["run"]["runId"]),
            job=Job(namespace=event["job"]["namespace"], name=event["job"]["name"]),
            inputs=[
                InputDataset(namespace=i["namespace"], name=i["name"]) for i in event["inputs"]
            ],
            outputs=[
                OutputDataset(namespace=o["namespace"], name=o["name"]) for o in event["outputs"]
            ],
        )
    compiled = next(e for e in events if e["job"]["name"] == f"compile.{name}")
    versions = {i["facets"]["version"]["datasetVersion"] for i in compiled["inputs"]}
    assert dataset.sha256 in versions
    repos.close()
