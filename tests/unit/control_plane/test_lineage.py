"""Lineage graph: queries both ways over dataset -> package -> device -> window -> prediction."""

from __future__ import annotations

import numpy as np
import pytest
from monitoring_support import monitored_manifest

from control_plane.core.lineage import LineageGraph, node_id
from edge_agent.core.manifest import DatasetRef

TRAIN = DatasetRef(role="reference", name="digits-train", sha256="a" * 64, rows=1000)
CALIB = DatasetRef(role="calibration", name="digits-calib", sha256="b" * 64, rows=200)
OTHER = DatasetRef(role="reference", name="other-train", sha256="c" * 64, rows=500)


@pytest.fixture()
def graph() -> LineageGraph:
    rng = np.random.default_rng(0)
    x, scores = rng.normal(size=(300, 4)), rng.random((300, 3))
    g = LineageGraph()
    v1 = g.add_package(monitored_manifest(x, scores, "1", datasets=(TRAIN, CALIB)))
    v2 = g.add_package(monitored_manifest(x, scores, "2", datasets=(OTHER,)))
    p1, p2 = v1.split(":", 1)[1], v2.split(":", 1)[1]
    g.add_rollout("r-1", p1, ["d1", "d2", "d3"])
    for device in ("d1", "d2", "d3"):
        g.set_running(device, p1)
    g.add_rollout("r-2", p2, ["d3"])
    g.set_running("d3", p2)  # d3 moved on to version 2
    g.set_running("fn-eu", p1, kind="function")
    window = g.add_window("d1", 7, p1)
    g.add_prediction("pred-42", window)
    g.add_feedback("pred-42", 3.0, 1000.0)
    report = g.add_drift_report("drift-1", [window], drifted_share=0.05)
    g.add_alert("alert-1", report, rule="feature_drift")
    return g


def test_which_devices_run_packages_built_from_a_dataset(graph):
    running = {n.id for n in graph.devices_running_from_dataset("a" * 64)}
    assert running == {"device:d1", "device:d2", "function:fn-eu"}  # d3 runs version 2 now
    assert {n.id for n in graph.devices_running_from_dataset("c" * 64)} == {"device:d3"}
    with pytest.raises(KeyError):
        graph.devices_running_from_dataset("f" * 64)


def test_what_produced_the_package_that_scored_a_prediction(graph):
    upstream = graph.provenance("pred-42")
    (package,) = upstream["package"]
    assert package.id == "package:digits-1-x86-64-generic-r1"
    assert package.attrs["profile"] == "x86-64-generic" and package.attrs["recipe"] == "fp32"
    assert package.attrs["fidelity_passed"] is True
    assert [n.id for n in upstream["model_version"]] == ["model_version:digits@1"]
    assert {n.attrs["name"] for n in upstream["dataset"]} == {"digits-train", "digits-calib"}
    assert [n.id for n in upstream["device"]] == ["device:d1"]


def test_downstream_of_a_window_reaches_reports_alerts_and_feedback(graph):
    below = {n.id for n in graph.walk(node_id("window", "d1/7"), "down")}
    assert below == {
        "prediction:pred-42",
        "feedback:pred-42",
        "drift_report:drift-1",
        "alert:alert-1",
    }


def test_linking_unknown_nodes_raises():
    with pytest.raises(KeyError):
        LineageGraph().link("package:x", "device:y", "runs_on")


def test_openlineage_events_are_valid_client_models(graph):
    import json
    import uuid

    from openlineage.client.event_v2 import Run

    from control_plane.monitoring.openlineage import lineage_events, to_json

    events = lineage_events(graph, "2026-11-29T22:30:00+00:00")
    by_job = {e.job.name: json.loads(to_json(e)) for e in events}
    assert set(by_job) == {"compile.digits", "rollout.r-1", "rollout.r-2", "drift"}
    compile_v1 = next(
        json.loads(to_json(e))
        for e in events
        if e.job.name == "compile.digits"
        and e.outputs[0].name.endswith("digits-1-x86-64-generic-r1")
    )
    assert compile_v1["eventType"] == "COMPLETE"
    assert compile_v1["schemaURL"].startswith("https://openlineage.io/spec/")
    uuid.UUID(compile_v1["run"]["runId"])
    assert {i["name"] for i in compile_v1["inputs"]} == {
        "datasets/digits-train",
        "datasets/digits-calib",
    }
    versions = {i["facets"]["version"]["datasetVersion"] for i in compile_v1["inputs"]}
    assert versions == {"a" * 64, "b" * 64}
    tags = {t["key"]: t["value"] for t in compile_v1["run"]["facets"]["tags"]["tags"]}
    assert tags["profile"] == "x86-64-generic" and tags["fidelity_passed"] == "True"
    rollout = by_job["rollout.r-1"]
    assert {o["name"] for o in rollout["outputs"]} == {"devices/d1", "devices/d2", "devices/d3"}
    assert by_job["drift"]["inputs"][0]["name"] == "windows/d1/7"
    # the same graph exports the same run ids; the client's models reject a bad one
    again = lineage_events(graph, "2026-11-29T23:00:00+00:00")
    assert [e.run.runId for e in again] == [e.run.runId for e in events]
    with pytest.raises(ValueError):
        Run(runId="not-a-uuid")
