"""`fleetcast monitor …` against the REST API served by waitress on a loopback port, over
real windows: the compiled digits MLP's own runtime scores the validation digits on a clean
site (munich) and brighter, noisier ones on another (berlin); a third device's window names
a package the catalog lacks. Every printed figure is checked against the route's JSON."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result

from control_plane.api import ApiOptions, create_api
from control_plane.api.client import ApiClient
from control_plane.api.serve import serve_http
from control_plane.cli import cli
from control_plane.cli_monitor_render import features_cell, fmt
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

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Monitored:
    settings: Settings
    env: dict[str, str]
    api: ApiClient  # the routes' JSON, to check the printed figures against
    context: Any
    name: str
    version: str
    clean_ids: list[str]
    labels: list[int]
    window_end: float
    manifest: Any

    def run(self, *args: str, token: str | None = None) -> Result:
        env = {**self.env, "FLEETCAST_TOKEN": token or self.env["FLEETCAST_TOKEN"]}
        return CliRunner().invoke(cli, ["monitor", *args], env=env, obj=self.settings)

    def ok(self, *args: str) -> str:
        result = self.run(*args)
        assert result.exit_code == 0, result.output
        return result.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json"))


def rows(output: str) -> list[list[str]]:
    """The body rows of the rich tables in ``output``, as stripped cells."""
    return [
        [cell.strip() for cell in line.split("│")[1:-1]]
        for line in output.splitlines()
        if line.startswith("│")
    ]


@pytest.fixture(name="m")
def monitored(tmp_path: Path, package: Path, keys: Any, digits_mlp: Any) -> Iterator[Monitored]:
    store = f"sqlite:///{tmp_path / 'store.db'}"
    repos = open_repositories(store)
    settings = Settings(
        data_dir=tmp_path / "cp", public_key=keys.public, profiles_dir=ROOT / "hardware-profiles"
    )
    app = create_api(repos, settings, ApiOptions(explain_interval=0))
    context = app.extensions["fleetcast.api"]
    admin = TokenService(repos, context.audit).create("ops", "admin", Principal("t", "admin"))[1]
    PackageService(repos, load_fleet_public_key(keys.public), tmp_path / "catalog").register(
        package, "test"
    )
    for device, site in (("cam-b1", "berlin"), ("cam-m1", "munich"), ("cam-x1", "munich")):
        repos.devices.add(NewDevice(device, "h", labels={"site": site}), at=1.0)
    ingest = IngestService(repos, DeviceService(repos))

    model = open_model(package, keys.public, telemetry=TelemetryConfig(1.0, max_captures=500))
    input_name = model.manifest.signature.inputs[0].name
    x = np.asarray(digits_mlp.x_validation, dtype=np.float32)
    clean_ids = [model.predict_with_id({input_name: x[i : i + 1]})[1] for i in range(len(x))]
    clean = model.telemetry.close_window("cam-m1", 1)
    shifted = np.clip(x * 1.5 + np.random.default_rng(0).normal(0, 2, x.shape), 0, 16)
    model.predict({input_name: shifted.astype(np.float32)})
    drifted = model.telemetry.close_window("cam-b1", 1)
    ghost = {**copy.deepcopy(clean), "device_id": "cam-x1", "package_id": "ghost-package"}
    ghost["captures"] = []
    for device, window in (("cam-m1", clean), ("cam-b1", drifted), ("cam-x1", ghost)):
        done = ingest.ingest(device, [(1, "telemetry_window", json.dumps(window))], "grpc")
        assert done.acked == [1], done.errors

    handle = serve_http(app, "127.0.0.1", 0)
    env = {
        "FLEETCAST_SERVER": handle.url, "FLEETCAST_TOKEN": admin,
        "XDG_CONFIG_HOME": str(tmp_path / "config"), "COLUMNS": "2000",
    }  # fmt: skip
    manifest = model.manifest
    try:
        yield Monitored(
            settings, env, ApiClient(handle.url, admin), context, manifest.model_name,
            manifest.model_version, clean_ids, [int(v) for v in digits_mlp.y_validation],
            clean["ended_at"], manifest,
        )  # fmt: skip
    finally:
        handle.stop()
        repos.close()


def test_drift_prints_each_groups_report_and_the_unevaluated_windows(m: Monitored) -> None:
    api = m.api.request("GET", "/api/v1/drift", query={"model": m.name, "group_by": "site"})
    out = m.ok("drift", m.name, "--group-by", "site")
    assert f"{api['windows']} windows, {api['rows']} rows" in out
    printed = {r[0]: r for r in rows(out) if len(r) == 9}
    assert set(printed) == {"site=berlin", "site=munich"}
    for report in api["reports"]:
        group, package, _, windows, n, status, share, features, _ = printed[report["group"]]
        assert (package, windows, n) == (report["package_id"], str(report["windows"]),
                                         str(report["rows"]))  # fmt: skip
        assert (status, share) == (report["status"], fmt(report["drifted_share"]))
        assert features == features_cell(report["drifted"], len(report["features"]))
    berlin = next(r for r in api["reports"] if r["group"] == "site=berlin")
    assert berlin["status"] == "drift" and len(berlin["drifted"]) > 0  # the data is shifted
    (lost,) = api["unevaluated"]
    assert [lost["group"], "ghost-package", str(lost["windows"]), lost["reason"]] in rows(out)
    assert "ghost-package" in lost["reason"]

    # one group, a sliding score, the figures per feature; --json is the route's answer
    out = m.ok("drift", m.name, "--group", "site=berlin", "--step-seconds", "60", "--features")
    assert "sliding drift: site=berlin" in out and "features: site=berlin" in out
    psi = {r[0]: r[3] for r in rows(out) if len(r) == 8}
    assert psi == {f["key"]: fmt(f["psi"]) for f in berlin["features"]}
    assert m.json("drift", m.name, "--group-by", "site")["reports"] == api["reports"]
    shares = m.ok("metrics", "--name", "fleetcast_drift_share", "--json").splitlines()
    by_group = {s["labels"]["group"]: s["value"] for s in map(json.loads, shares)}
    assert by_group == {r["group"]: r["drifted_share"] for r in api["reports"]}
    (windows,) = [r for r in rows(m.ok("metrics")) if r[0] == "fleetcast_ingested_windows_total"]
    assert windows[2] == "3.0000"  # the ghost window counts: ingested, not evaluated
    assert m.json("drift", m.name, "--since", "2h")["windows"] == 3  # an age: all of them
    assert m.json("drift", m.name, "--until", "2000-01-01T00:00Z")["windows"] == 0


def test_feedback_from_a_file_then_accuracy_measured_beside_estimated(
    m: Monitored, tmp_path: Path
) -> None:
    half = len(m.clean_ids) // 2
    csv_file = tmp_path / "labels.csv"
    lines = [f"{p},{y}" for p, y in zip(m.clean_ids[:half], m.labels[:half], strict=True)]
    csv_file.write_text("prediction_id,label\n" + "\n".join([*lines, "never-scored,3", ""]))
    out = m.ok("feedback", str(csv_file))
    assert out.splitlines()[0].startswith(f"received {half + 1}, matched {half}, unknown 1,")
    assert "  never-scored" in out.splitlines()

    jsonl = tmp_path / "labels.jsonl"  # the rest as JSON lines, one also given by --label
    rest = zip(m.clean_ids[half:], m.labels[half:], strict=True)
    jsonl.write_text("\n".join(json.dumps({"prediction_id": p, "label": y}) for p, y in rest))
    last = f"{m.clean_ids[-1]}={m.labels[-1]}"
    sent = m.json("feedback", str(jsonl), "--label", last)
    assert sent["received"] == len(m.clean_ids) - half + 1 and sent["requests"] == 1
    assert sent["matched"] == len(m.clean_ids) - half and sent["unknown_ids"] == []
    assert sent["duplicate_ids"] == [m.clean_ids[-1]]

    query = {"model": m.name, "version": m.version, "bucket_seconds": 86400}
    api = m.api.request("GET", "/api/v1/accuracy", query=query)
    out = m.ok("accuracy", m.name, m.version, "--bucket-seconds", "86400")
    assert f"{api['captures']} captures, {api['labelled']} labelled" in out
    assert api["labelled"] == len(m.clean_ids)
    assert f"reference accuracy {api['estimated']['reference_accuracy']:.4f}" in out
    (bucket,) = api["buckets"]
    (estimate,) = api["estimated"]["buckets"]
    (row,) = [r for r in rows(out) if len(r) == 8]
    assert row[0] == bucket.get("group", "all")
    assert row[2:] == [
        str(bucket["count"]), fmt(bucket["accuracy"]), fmt(bucket["f1_macro"]),
        str(estimate["count"]), fmt(estimate["accuracy"]), fmt(estimate["standard_error"]),
    ]  # fmt: skip
    assert estimate["count"] == api["captures"] > api["labelled"]  # labelled or not
    assert bucket["accuracy"] == pytest.approx(m.manifest.calibration.accuracy, abs=0.01)
    split = m.api.request("GET", "/api/v1/accuracy", query={**query, "group_by": "site"})
    assert {g["group"] for g in split["groups"]} == {"site=berlin", "site=munich"}
    out = m.ok("accuracy", m.name, m.version, "--bucket-seconds", "86400", "--group-by", "site")
    printed = {r[0]: r for r in rows(out) if len(r) == 6}
    for g in split["groups"]:
        assert printed[g["group"]] == [
            g["group"], fmt(g["captures"]), fmt(g["labelled"]), fmt(g["accuracy"]),
            fmt(g["f1_macro"]), fmt(g["estimated_accuracy"]),
        ]  # fmt: skip
    assert {r[0] for r in rows(out) if len(r) == 8} == {"site=berlin", "site=munich"}
    assert (
        m.json("accuracy", m.name, m.version)["buckets"]
        == m.api.request("GET", "/api/v1/accuracy", query={"model": m.name, "version": m.version})[
            "buckets"
        ]
    )


def test_feedback_goes_in_chunks_of_ten_thousand_and_lists_every_unknown_id(
    m: Monitored, tmp_path: Path
) -> None:
    labels = tmp_path / "many.csv"
    unknown = [f"gone-{i}" for i in range(10_050)]
    known = list(zip(m.clean_ids, m.labels, strict=True))
    labels.write_text("\n".join([*(f"{p},1" for p in unknown), *(f"{p},{y}" for p, y in known)]))
    out = m.ok("feedback", str(labels)).splitlines()
    total = len(unknown) + len(known)
    assert out[0] == (f"received {total}, matched {len(known)}, unknown {len(unknown)},"
                      " duplicate 0 (2 requests)")  # fmt: skip
    assert [line.strip() for line in out[2:]] == unknown


def test_wrong_labels_fire_an_alert_listed_and_acknowledged(m: Monitored) -> None:
    third = len(m.clean_ids) // 3
    wrong = [(y + 1) % 10 if i < third else y for i, y in enumerate(m.labels)]
    pairs = [f"--label={p}={y}" for p, y in zip(m.clean_ids, wrong, strict=True)]
    assert m.json("feedback", *pairs)["matched"] == len(m.clean_ids)
    evaluated = m.ok("alerts", "evaluate")
    assert "accuracy_drop" in evaluated
    api = list(m.api.pages("/api/v1/alerts", {"state": "firing", "rule": "accuracy_drop"}))
    (alert,) = api
    out = m.ok("alerts", "list", "--state", "firing", "--model", m.name)
    (row,) = [r for r in rows(out) if r[1] == "accuracy_drop"]
    assert row[:6] == [
        alert["id"],
        "accuracy_drop",
        "critical",
        "firing",
        f"group=all,model={m.name},version={m.version}",
        fmt(alert["value"]),
    ]
    assert alert["value"] > 0.25
    acked = m.json("alerts", "ack", alert["id"])
    assert acked["acknowledged_by"] == "ops" and acked["state"] == "firing"
    assert m.json("alerts", "show", alert["id"]) == m.api.request(
        "GET", f"/api/v1/alerts/{alert['id']}"
    )
    delivered = m.ok("alerts", "deliveries")
    assert "deliveries: none" in delivered  # no webhook configured: nothing to send


def test_explain_attributions_lineage_and_openlineage(m: Monitored) -> None:
    pid = m.clean_ids[0]
    api = m.api.request("GET", f"/api/v1/predictions/{pid}/explanation")
    out = m.ok("explain", pid, "--top", "5")
    assert f"prediction {pid} on cam-m1: {m.name} {m.version}" in out
    assert f"base value {fmt(api['base_value'])}, prediction {fmt(api['prediction'])}" in out
    assert ": holds" in out and "cached" in out  # the route computed it once, above
    assert rows(out) == [
        [a["feature"], fmt(a["value"]), fmt(a["shap"], 6)] for a in api["attributions"][:5]
    ]
    assert f"… {len(api['attributions']) - 5} more features" in out

    later = m.window_end + 2 * 3600  # the capture hour has closed: the job explains it
    assert m.context.explanations.aggregate(now=later).windows == 1
    view = m.api.request("GET", "/api/v1/attributions", query={"model": m.name})
    (window,) = view["packages"][0]["windows"]
    (row,) = rows(m.ok("attributions", m.name))
    assert row[2:5] == [str(window["captures"]), str(window["rows_explained"]),
                        window["attribution_drift"]["status"]]  # fmt: skip

    dataset = next(d for d in m.manifest.lineage.datasets if d.role == "calibration")
    down = m.api.request("GET", "/api/v1/lineage", query={"dataset": dataset.sha256})
    out = m.ok("lineage", "--dataset", dataset.sha256)
    assert out.startswith(f"from dataset:{dataset.sha256}, downstream")
    printed = {(r[0], r[1]) for r in rows(out) if len(r) == 3}
    assert {(n["kind"], n["id"]) for n in down["nodes"]} <= printed
    assert {(e["src"], e["relation"], e["dst"]) for e in down["edges"]} <= {
        tuple(r) for r in rows(out)
    }
    assert ("device", "device:cam-m1") in printed  # running a package built from it
    up = m.json("lineage", "--prediction", pid)
    assert {n["kind"] for n in up["downstream"]} == {"explanation"}  # no label in this test

    events = [json.loads(line) for line in m.ok("openlineage", "--model", m.name, "--json")
              .splitlines()]  # fmt: skip
    api_events = m.api.request("GET", "/api/v1/lineage/openlineage", query={"model": m.name})
    assert [e["run"]["runId"] for e in events] == [e["run"]["runId"] for e in api_events["events"]]
    assert f"compile.{m.name}" in {e["job"]["name"] for e in events}


def test_bad_input_is_one_clear_line_and_a_non_zero_exit(m: Monitored, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(f"prediction_id,label\n{m.clean_ids[0]},3\n{m.clean_ids[1]},three\n")
    result = m.run("feedback", str(bad))
    assert result.exit_code == 1
    assert result.output == f"Error: {bad} line 3: label 'three' is not a number\n"
    query = {"model": m.name, "version": m.version}
    assert m.api.request("GET", "/api/v1/accuracy", query=query)["labelled"] == 0  # none sent
    result = m.run("drift", m.name, "--group", "site")
    assert result.exit_code == 2
    assert "Invalid value for '--group': 'site': expected label=value" in result.output
    result = m.run("accuracy", m.name, m.version, "--group", "=berlin")
    assert result.exit_code == 2 and "expected label=value" in result.output
    result = m.run("drift", m.name, "--since", "yesterday")
    assert result.exit_code == 2 and "'yesterday': expected epoch seconds" in result.output
    result = m.run("lineage", "--device", "cam-m1", "--prediction", "p")
    assert result.exit_code == 2 and "exactly one of" in result.output
    result = m.run("explain", "never-scored-42")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "404" in result.output and "never-scored-42" in result.output
    result = m.run("feedback")
    assert result.exit_code == 2 and "give a FILE and/or --label" in result.output

    viewer = m.api.request("POST", "/api/v1/tokens", body={"name": "dash", "role": "viewer"})
    assert m.run("drift", m.name, token=viewer["token"]).exit_code == 0  # a viewer reads
    result = m.run("feedback", "--label", f"{m.clean_ids[0]}=1", token=viewer["token"])
    assert result.exit_code == 1 and result.output.startswith("Error: 403 ")  # labels: operator
    assert m.api.request("GET", "/api/v1/accuracy", query=query)["labelled"] == 0
