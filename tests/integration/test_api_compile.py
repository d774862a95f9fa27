"""A compile job through the served API end to end: the real pipeline, packages in the catalog,
the version deployed over the API to a real agent (gRPC), which installs it and scores."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from control_plane.api.client import ApiClient
from control_plane.cli import cli
from control_plane.compiler.sources import load_npz, load_torch
from control_plane.server import ControlPlane, ServeOptions
from control_plane.services.tokens import bootstrap_admin
from control_plane.settings import Settings
from edge_agent.agent import Agent
from edge_agent.package import load_public_key, open_package
from edge_agent.settings import Settings as AgentSettings
from edge_agent.transport.factory import make_transport, save_credentials
from edge_agent.transport.grpc import enroll
from tests.integration.transport_support import HOST, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
PROFILES = ["x86-64-generic", "x86-64-litert"]


def onnx_of(trained: Any, out: Path) -> Path:
    """The trained digits MLP as a dynamic-batch ONNX file (the compiler's own export)."""
    calibration = load_npz(trained.calibration, "calibration")
    source = load_torch(
        trained.state_dict,
        f"control_plane.examples.digits:{trained.kind}",
        calibration,
        17,
        trained.calibration,
    )
    out.write_bytes(source.onnx_bytes)
    return out


def test_a_compile_job_through_the_api_registers_packages_a_real_agent_installs_and_scores(
    tmp_path: Path, digits_mlp: Any, keys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a relative data directory, as `fleetcast serve` has by default (.fleetcast): the
    # job's links to the uploads must still resolve from its temporary directory
    monkeypatch.chdir(tmp_path)
    settings = Settings(data_dir=Path("data"), profiles_dir=ROOT / "hardware-profiles")
    settings.key_dir.mkdir(parents=True)
    shutil.copy(keys.private, settings.key_dir / "fleetcast.key")
    plane = ControlPlane(  # gRPC for the agent, the REST API with the real compile pipeline
        ServeOptions(data_dir=Path("data"), grpc_address="127.0.0.1:0", http_address="127.0.0.1:0")
    ).start()
    agent: Agent | None = None
    try:
        assert plane.services is not None
        repos = plane.services.repos
        _, admin = bootstrap_admin(repos)
        url = f"http://127.0.0.1:{plane.http_port}"
        client = ApiClient(url, admin)
        client.request("POST", "/api/v1/models", body={"name": "digits", "owner": "ml"})
        env = {"FLEETCAST_SERVER": url, "FLEETCAST_TOKEN": admin,
               "XDG_CONFIG_HOME": str(tmp_path / "config")}  # fmt: skip
        register = CliRunner().invoke(
            cli,
            [
                "versions", "register", "digits", "1",
                "--source", str(onnx_of(digits_mlp, tmp_path / "digits.onnx")),
                "--calibration", str(digits_mlp.calibration),
                "--validation", str(digits_mlp.validation),
                "--labels", str(digits_mlp.labels),
                "--intended-use", "handwritten digits", "--training-data", "sklearn digits",
                "--owner", "ml", "--metric", f"accuracy={digits_mlp.fp32_accuracy}", "--json",
            ],
            env=env,
            obj=settings,
        )  # fmt: skip
        assert register.exit_code == 0, register.output
        args = ["versions", "compile", "digits", "1", "--json"]
        for profile in PROFILES:
            args += ["-p", profile]
        compiled = CliRunner().invoke(cli, args, env=env, obj=settings)
        assert compiled.exit_code == 0, compiled.output
        job = json.loads(compiled.stdout.strip().splitlines()[-1])
        assert job["state"] == "succeeded", job
        shown = client.request("GET", f"/api/v1/compile-jobs/{job['id']}")
        assert "choosing for x86-64-generic" in shown["log"]
        assert [p["profile"] for p in shown["report"]["packages"]] == PROFILES

        listed = client.request("GET", "/api/v1/packages", query={"model": "digits"})["items"]
        assert sorted(p["profile_id"] for p in listed) == sorted(PROFILES)
        public = load_public_key(keys.public)
        for item in listed:
            stored = repos.packages.get(item["sha256"])
            checked = open_package(Path(stored.path), public, expected_sha256=item["sha256"])
            assert (checked.manifest.model_name, checked.manifest.model_version) == ("digits", "1")
            assert checked.manifest.profile.id == item["profile_id"]
            assert checked.manifest.fidelity.passed
        version = client.request("GET", "/api/v1/models/digits/versions/1")
        assert version["stage"] == "compiled"
        registered = client.request("GET", "/api/v1/audit", query={"action": "package.register"})[
            "items"
        ]
        assert len(registered) == len(PROFILES)

        # the version, not a file, goes to a real agent: enrolled with an API token, its
        # profile set and the deploy sent with the CLI, the package picked for its profile
        def fleetcast(*argv: str) -> Any:
            done = CliRunner().invoke(cli, [*argv, "--json"], env=env, obj=settings)
            assert done.exit_code == 0, done.output
            return json.loads(done.stdout.strip().splitlines()[-1])

        token = fleetcast("devices", "token", "--device-id", "edge-1")["token"]
        state = tmp_path / "edge-1"
        save_credentials(state, enroll(f"127.0.0.1:{plane.grpc_port}", token, "edge-1", HOST))
        fleetcast("devices", "set", "edge-1", "--profile", "x86-64-generic")
        agent_settings = AgentSettings(
            state_dir=state,
            public_key=keys.public,
            device_id="edge-1",
            server=f"grpc://127.0.0.1:{plane.grpc_port}",
        )
        assert agent_settings.server is not None
        agent = Agent(agent_settings, make_transport(agent_settings.server, state))
        agent.start()
        sent = fleetcast("deploy", "digits", "1", "--device", "edge-1")
        generic = next(p for p in listed if p["profile_id"] == "x86-64-generic")
        assert sent["sha256"] == generic["sha256"]
        commands = plane.services.commands
        assert wait_until(lambda: commands.get(sent["command_id"]).status != "pending", 60)
        acked = commands.get(sent["command_id"])
        assert acked.status == "ok", acked.result
        assert agent.installed()["digits"].active.sha256 == generic["sha256"]
        x = np.asarray(digits_mlp.x_validation)
        y = np.asarray(digits_mlp.y_validation)
        scores, _ = agent.predict("digits", {"input": x})
        accuracy = float((next(iter(scores.values())).argmax(axis=1) == y).mean())
        assert accuracy >= digits_mlp.fp32_accuracy - 0.03, accuracy  # the quantized package
    finally:
        if agent is not None:
            agent.close()
        plane.stop()
