"""Function aliases end to end: a real control plane (gRPC + REST API + rollouts ticker,
SQLite), handler processes that resolve their alias over the API at init, download and
verify the packages of the split, and send telemetry windows per version; the
``fleetcast`` CLI sets the alias, starts an alias rollout and scores a batch by version."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from control_plane.api.client import ApiClient
from control_plane.cli import cli
from control_plane.server import ControlPlane, ServeOptions
from control_plane.services.audit import AuditService
from control_plane.services.tokens import Principal, TokenService
from control_plane.settings import Settings
from control_plane.store.records import ModelCard
from functions.alias import Route, pick_route
from tests.integration.transport_support import enroll_device

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]
FUNCTION = "fn-digits"
ALIAS = f"{FUNCTION}:live"


@dataclass
class Setup:
    plane: ControlPlane
    model: str
    env: dict[str, str]  # the CLI's (operator token)
    container_env: dict[str, str]
    settings: Settings
    client: ApiClient
    tmp: Path

    def cli(self, *args: str) -> Any:
        answer = CliRunner().invoke(cli, [*args, "--json"], env=self.env, obj=self.settings)
        assert answer.exit_code == 0, answer.output
        lines = answer.stdout.strip().splitlines()
        return json.loads(lines[-1]) if lines else None

    def windows(self) -> list[dict[str, Any]]:
        assert self.plane.services is not None
        found = self.plane.services.ingest.all(FUNCTION, "telemetry_window")
        return [json.loads(w.body_json) for w in found]

    def requests_by_version(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for w in self.windows():
            counts[w["model_version"]] = counts.get(w["model_version"], 0) + w["requests"]
        return counts


def slow_variant(edge_packages: Any, version: str, layers: int = 400, width: int = 512) -> Path:
    """digits at ``version``: the same answers (its self-test passes) plus ``layers`` extra
    ``width``-wide MatMul+Tanh layers whose result is added times zero: a genuinely slower
    model (about 100M multiply-adds a row more: milliseconds, against tens of microseconds)."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    from control_plane.compiler.package import build_package
    from control_plane.signing import load_private_key
    from edge_agent.core.manifest import make_package_id
    from edge_agent.package import read_package

    manifest, _, model_bytes = read_package(edge_packages.onnx.read_bytes())
    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    for node in graph.node:
        for i, name in enumerate(node.output):
            if name == "output":
                node.output[i] = "fc_original_output"
    rng = np.random.default_rng(0)
    widen = (rng.standard_normal((64, width)) / 8).astype(np.float32)
    weights = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
    graph.initializer.extend(
        [
            numpy_helper.from_array(widen, "fc_widen"),
            numpy_helper.from_array(weights, "fc_w"),
            numpy_helper.from_array(np.zeros((1, 1), np.float32), "fc_zero"),
        ]
    )
    graph.node.append(helper.make_node("MatMul", ["input", "fc_widen"], ["fc_wide"]))
    hidden = "fc_wide"
    for k in range(layers):
        graph.node.append(helper.make_node("MatMul", [hidden, "fc_w"], [f"fc_m{k}"]))
        graph.node.append(helper.make_node("Tanh", [f"fc_m{k}"], [f"fc_h{k}"]))
        hidden = f"fc_h{k}"
    graph.node.append(helper.make_node("ReduceSum", [hidden], ["fc_sum"], keepdims=1))
    graph.node.append(helper.make_node("Mul", ["fc_sum", "fc_zero"], ["fc_nothing"]))
    graph.node.append(helper.make_node("Add", ["fc_original_output", "fc_nothing"], ["output"]))
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    model_file = manifest.model_file.model_copy(
        update={"sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data)}
    )
    release = int(version)
    manifest = manifest.model_copy(
        update={
            "model_version": version,
            "release": release,
            "model_file": model_file,
            "package_id": make_package_id(
                manifest.model_name, version, manifest.profile.id, release
            ),
        }
    )
    path = edge_packages.directory / f"slow-{version}.fcpkg"
    key = load_private_key(edge_packages.private_key)
    path.write_bytes(build_package(manifest, data, key))
    return path


@pytest.fixture()
def setup(tmp_path: Path, keys: Any, edge_packages: Any) -> Iterator[Setup]:
    plane = ControlPlane(
        ServeOptions(
            data_dir=tmp_path / "cp",
            public_key=keys.public,
            grpc_address="127.0.0.1:0",
            http_address="127.0.0.1:0",
            rollout_tick_seconds=0.2,
        )
    ).start()
    try:
        services = plane.services
        assert services is not None
        v2 = edge_packages.variant("fn-v2", model_version="2", release=2)
        first = services.packages.register(edge_packages.onnx, "test-operator")
        services.packages.register(v2, "test-operator")
        services.packages.register(slow_variant(edge_packages, "3"), "test-operator")
        repos = services.repos
        repos.models.add(first.model_name, "digits", "ml", time.time())
        for version in ("1", "2", "3"):
            card = ModelCard("digits", "sklearn digits", "ml")
            repos.versions.add(first.model_name, version, card, None, time.time())
            repos.versions.set_stage(first.model_name, version, "registered", "compiled", 1.0)
        creds = enroll_device(plane, FUNCTION)  # the function's telemetry identity
        tokens = TokenService(repos, AuditService(repos.audit))
        _, operator = tokens.create("ci", "operator", Principal("test", "admin"))
        _, viewer = tokens.create("fn", "viewer", Principal("test", "admin"))
        url = f"http://127.0.0.1:{plane.http_port}"
        empty = tmp_path / "task-root"
        empty.mkdir()
        yield Setup(
            plane=plane,
            model=first.model_name,
            env={
                "FLEETCAST_SERVER": url,
                "FLEETCAST_TOKEN": operator,
                "XDG_CONFIG_HOME": str(tmp_path / "config"),
            },
            container_env={
                "FLEETCAST_ALIAS": ALIAS,
                "FLEETCAST_API_URL": url,
                "FLEETCAST_API_TOKEN": viewer,
                "FLEETCAST_PACKAGES_DIR": str(empty),  # nothing local: download both
                "FLEETCAST_PACKAGE_CACHE": str(tmp_path / "package-cache"),
                "FLEETCAST_PUBLIC_KEY": str(keys.public),
                "FLEETCAST_SERVER": f"grpc://127.0.0.1:{plane.grpc_port}",
                "FLEETCAST_DEVICE_ID": FUNCTION,
                "FLEETCAST_DEVICE_TOKEN": creds["device_token"],
                "FLEETCAST_WINDOW_SECONDS": "3600",
                "FLEETCAST_WINDOW_MAX_REQUESTS": "100",
                # this test counts windows, it does not time them: wait for every ack even
                # on a loaded machine (a timed-out flush would leave a window in the outbox)
                "FLEETCAST_FLUSH_TIMEOUT": "60",
            },
            settings=Settings(data_dir=tmp_path / "cli"),
            client=ApiClient(url, operator),
            tmp=tmp_path,
        )
    finally:
        plane.stop()


class Container:
    """The Lambda handler in its own process (``lambda_loop.py``), fed one event per line."""

    def __init__(self, env: dict[str, str], outbox: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("lambda_loop.py"))],
            cwd=ROOT,
            env={
                **os.environ,
                "PYTHONPATH": str(ROOT),
                **env,
                "FLEETCAST_OUTBOX_DIR": str(outbox),
            },
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._line() == {"ready": True}

    def _line(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"handler process exited ({self.proc.poll()})"
        return dict(json.loads(line))

    def invoke(self, event: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(event) + "\n")
        self.proc.stdin.flush()
        return self._line()

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()  # end of the loop: the process exits
        try:
            self.proc.wait(20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
            if self.proc.stdout is not None:
                self.proc.stdout.close()


def _binomial_bounds(n: int, p: float, z: float = 4.0) -> tuple[float, float]:
    """n*p ± z binomial standard deviations (z = 4: a correct split misses it 1 in 15,000)."""
    sd = math.sqrt(n * p * (1 - p))
    return n * p - z * sd, n * p + z * sd


def test_a_new_container_splits_traffic_by_its_alias_and_reports_each_version(
    setup: Setup, edge_packages: Any
) -> None:
    made = setup.cli("functions", "alias", "set", ALIAS, "--model", setup.model, "--version", "1")
    assert made["routes"] == {"1": 100} and made["telemetry_device"] == FUNCTION
    split = setup.cli(
        "functions", "alias", "set", ALIAS, "--model", setup.model, "--routes", "1=90,2=10"
    )
    assert split["routes"] == {"1": 90, "2": 10}
    assert setup.cli("functions", "alias", "get", ALIAS)["revision"] == 2

    container = Container(setup.container_env, setup.tmp / "tmp-a")
    row = [float(v) for v in edge_packages.x[0]]
    n = 2000
    served = []
    for i in range(n):
        reply = container.invoke({"instances": [row], "request_id": f"req-{i}"})
        served.append(reply["model"]["version"])
    container.close()

    low, high = _binomial_bounds(n, 0.10)
    assert low <= served.count("2") <= high, served.count("2")
    # deterministic per request id: exactly the versions the alias' pick gives these ids
    routes = (Route("1", 90, Path("-")), Route("2", 10, Path("-")))
    assert served == [["1", "2"][pick_route(routes, f"req-{i}", ALIAS)] for i in range(n)]
    # every window was sent at a count bound (100 | 2000): counts equal invocations
    expected = {"1": served.count("1"), "2": served.count("2")}
    assert setup.requests_by_version() == expected
    assert {w["alias"] for w in setup.windows()} == {ALIAS}  # the alias rollout's identity
    cached = sorted(p.name for p in (setup.tmp / "package-cache").iterdir())
    assert len(cached) == 2  # both versions downloaded once, by sha256


def test_an_alias_rollout_moves_by_traffic_steps_gated_on_function_telemetry(
    setup: Setup, edge_packages: Any
) -> None:
    setup.cli("functions", "alias", "set", ALIAS, "--model", setup.model, "--version", "1")
    spec = setup.tmp / "spec.json"
    gates = {"min_requests": 20}
    spec.write_text(json.dumps({"gates": {"error_rate": gates, "latency": gates}}))
    made = setup.cli(
        "rollouts", "create", "--spec", str(spec), "--alias", ALIAS,
        "--model", setup.model, "--version", "2", "--waves", "10,50,100", "--bake", "0.5",
    )  # fmt: skip
    rollout_id = made["id"]
    row = [float(v) for v in edge_packages.x[0]]
    seen: list[dict[str, int]] = []
    sent = 0
    for container_number in range(8):  # a new container per step picks up the moved alias
        routes = setup.client.request("GET", f"/api/v1/functions/aliases/{ALIAS}")["routes"]
        seen.append(routes)
        if routes == {"2": 100}:
            break
        container = Container(setup.container_env, setup.tmp / f"tmp-{container_number}")
        for _ in range(30):  # batches of 100 (one window each) until the alias moves
            for _ in range(100):
                container.invoke({"instances": [row], "request_id": f"r-{sent}"})
                sent += 1
            moved = setup.client.request("GET", f"/api/v1/functions/aliases/{ALIAS}")["routes"]
            if moved != routes:
                break
            time.sleep(0.2)
        container.close()
    assert seen == [{"1": 90, "2": 10}, {"1": 50, "2": 50}, {"2": 100}]
    # traffic goes on at 100 %: the last wave's gates need windows from after its bake
    container = Container(setup.container_env, setup.tmp / "tmp-last")
    for _ in range(60):
        view = setup.client.request("GET", f"/api/v1/rollouts/{rollout_id}")
        if view["summary"]["phase"] == "completed":
            break
        for _ in range(100):
            container.invoke({"instances": [row], "request_id": f"r-{sent}"})
            sent += 1
        time.sleep(0.2)
    container.close()
    assert view["summary"]["phase"] == "completed", view["summary"]
    for wave in view["waves"]:
        gates = {g["gate"]: g for g in wave["gates"]}
        assert gates["error_rate"]["verdict"] == gates["latency"]["verdict"] == "pass"
        assert gates["error_rate"]["numbers"]["requests"] >= 20
    assert sum(setup.requests_by_version().values()) == sent


def test_a_slower_version_trips_the_latency_gate_and_the_alias_returns_to_the_previous(
    setup: Setup, edge_packages: Any
) -> None:
    setup.cli("functions", "alias", "set", ALIAS, "--model", setup.model, "--version", "1")
    spec = setup.tmp / "spec.json"
    gates = {"min_requests": 20}
    spec.write_text(json.dumps({"gates": {"error_rate": gates, "latency": gates}}))
    made = setup.cli(
        "rollouts", "create", "--spec", str(spec), "--alias", ALIAS,
        "--model", setup.model, "--version", "3", "--waves", "10,100", "--bake", "30",
    )  # fmt: skip
    rollout_id = made["id"]
    url = f"/api/v1/functions/aliases/{ALIAS}"
    assert setup.client.request("GET", url)["routes"] == {"1": 90, "3": 10}
    container = Container(setup.container_env, setup.tmp / "tmp-slow")
    row = [float(v) for v in edge_packages.x[0]]
    served: list[str] = []
    for batch in range(20):  # fails fast: a gate may fail a wave before its bake ends
        for i in range(100):
            reply = container.invoke({"instances": [row], "request_id": f"s-{batch}-{i}"})
            served.append(reply["model"]["version"])
        if setup.client.request("GET", url)["routes"] == {"1": 100}:
            break
        time.sleep(0.3)
    container.close()
    assert setup.client.request("GET", url)["routes"] == {"1": 100}
    view = setup.client.request("GET", f"/api/v1/rollouts/{rollout_id}")
    assert view["summary"]["phase"] == "aborted" and view["waves"][0]["status"] == "failed"
    latency = {g["gate"]: g for g in view["waves"][0]["gates"]}["latency"]
    numbers = latency["numbers"]
    assert latency["verdict"] == "fail" and numbers["p95_ms"] > numbers["limit_ms"]
    assert numbers["baseline_p95_ms"] is not None and numbers["requests"] >= 20
    assert "3" in served and "1" in served
    entries = setup.client.request("GET", "/api/v1/audit", query={"action": "rollout.wave_failed"})
    assert [e["subject"] for e in entries["items"]] == [f"rollout:{rollout_id}"]


def test_batch_score_by_version_fetches_the_package_from_the_catalog(
    setup: Setup, edge_packages: Any
) -> None:
    import numpy as np

    np.savez(setup.tmp / "in.npz", input=edge_packages.x[:50])
    common = ["--input", str(setup.tmp / "in.npz"), "--public-key", str(edge_packages.public_key)]
    by_version = setup.tmp / "by-version.csv"
    env = {**setup.env, "FLEETCAST_API_URL": setup.env["FLEETCAST_SERVER"]}
    answer = CliRunner().invoke(
        cli,
        ["batch", "score", "--model", setup.model, "--version", "2", "--output", str(by_version)]
        + common,
        env=env,
        obj=setup.settings,
    )
    assert answer.exit_code == 0, answer.output
    by_file = setup.tmp / "by-file.csv"
    v2 = edge_packages.directory / "fn-v2.fcpkg"
    answer = CliRunner().invoke(
        cli,
        ["batch", "score", "--package", str(v2), "--output", str(by_file), "--job-id", "x"]
        + common,
        obj=setup.settings,
    )
    assert answer.exit_code == 0, answer.output

    def values(path: Path) -> list[list[str]]:  # the outputs, without the prediction ids
        lines = path.read_text().splitlines()
        return [line.split(",")[:2] + line.split(",")[3:] for line in lines]

    assert values(by_version) == values(by_file) and len(values(by_file)) == 51
    missing = CliRunner().invoke(
        cli,
        ["batch", "score", "--model", setup.model, "--version", "9", "--output", "x.csv"] + common,
        env=env,
        obj=setup.settings,
    )
    assert missing.exit_code != 0 and "9 has no package in the catalog" in missing.output
