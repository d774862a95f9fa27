"""Rollouts end to end: a real control plane (gRPC, REST API, rollouts ticker, SQLite) and
four real ``fleetcast-agent run`` processes over gRPC, driven through the ``fleetcast`` CLI."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from edge_support import AgentProcess

from control_plane.api.client import ApiClient
from control_plane.cli import cli
from control_plane.server import ControlPlane, ServeOptions
from control_plane.services.audit import AuditService
from control_plane.services.tokens import Principal, TokenService
from control_plane.settings import Settings
from control_plane.store.records import ModelCard, Package
from edge_agent.transport.factory import save_credentials
from tests.integration.transport_support import enroll_device, wait_until

pytestmark = pytest.mark.integration

DEVICES = 4
PROFILE = "x86-64-generic"


@dataclass
class Fleet:
    plane: ControlPlane
    package: Package
    agents: list[AgentProcess]
    client: ApiClient
    env: dict[str, str]
    settings: Settings

    def cli(self, *args: str) -> Any:
        answer = CliRunner().invoke(cli, [*args, "--json"], env=self.env, obj=self.settings)
        assert answer.exit_code == 0, answer.output
        lines = answer.stdout.strip().splitlines()
        return json.loads(lines[-1]) if lines else None

    def commands(self, rollout_id: str) -> list[Any]:
        assert self.plane.services is not None
        found = self.plane.services.commands.list(kind="deploy", limit=1000).items
        return [c for c in found if c.body.get("rollout") == rollout_id]


@pytest.fixture()
def fleet(tmp_path: Path, keys: Any, package: Path) -> Iterator[Fleet]:
    plane = ControlPlane(
        ServeOptions(
            data_dir=tmp_path / "cp",
            public_key=keys.public,
            grpc_address="127.0.0.1:0",
            http_address="127.0.0.1:0",
            rollout_tick_seconds=0.3,
        )
    ).start()
    agents: list[AgentProcess] = []
    try:
        services = plane.services
        assert services is not None
        registered = services.packages.register(package, "test-operator")
        repos = services.repos
        card = ModelCard("handwritten digits", "sklearn digits", "ml")
        repos.models.add(registered.model_name, "digits", "ml", time.time())
        repos.versions.add(registered.model_name, registered.model_version, card, None, time.time())
        repos.versions.set_stage(
            registered.model_name, registered.model_version, "registered", "compiled", time.time()
        )
        for i in range(DEVICES):
            device_id = f"edge-{i}"
            state = tmp_path / device_id
            save_credentials(state, enroll_device(plane, device_id))
            # what an operator labels and the device's hardware report says (not read by the
            # agent from this host's CPU in this test: every agent runs on the same machine)
            services.devices.set_labels(device_id, {"site": "lab"}, "test-operator")
            services.devices.report(device_id, profile_id=PROFILE)
            env = {
                "FLEETCAST_AGENT_DEVICE_ID": device_id,
                "FLEETCAST_AGENT_SERVER": f"grpc://127.0.0.1:{plane.grpc_port}",
            }
            agents.append(AgentProcess(state, keys.public, env))
        _, operator = TokenService(repos, AuditService(repos.audit)).create(
            "ci", "operator", Principal("test", "admin")
        )
        url = f"http://127.0.0.1:{plane.http_port}"
        env = {
            "FLEETCAST_SERVER": url,
            "FLEETCAST_TOKEN": operator,
            "XDG_CONFIG_HOME": str(tmp_path / "config"),
        }
        spec = tmp_path / "spec.json"
        spec.write_text(
            json.dumps(
                {
                    "min_finished": 1,
                    "device_timeout_s": 60,
                    # the agents serve no traffic here: the telemetry gates would stay pending
                    "gates": {"error_rate": {"enabled": False}, "latency": {"enabled": False}},
                }
            )
        )
        env["SPEC"] = str(spec)
        yield Fleet(
            plane,
            registered,
            agents,
            ApiClient(url, operator),
            env,
            Settings(data_dir=tmp_path / "cli"),
        )
    finally:
        for agent in agents:
            agent.stop()
        plane.stop()


def _create(fleet: Fleet, waves: str, bake: float) -> str:
    made = fleet.cli(
        "rollouts", "create", "--spec", fleet.env["SPEC"],
        "--model", fleet.package.model_name, "--version", fleet.package.model_version,
        "--selector", "site=lab", "--waves", waves, "--bake", str(bake),
    )  # fmt: skip
    assert made["phase"] == "running"
    return str(made["id"])


def _phase(fleet: Fleet, rollout_id: str) -> str:
    return str(fleet.client.request("GET", f"/api/v1/rollouts/{rollout_id}")["summary"]["phase"])


def test_a_two_wave_rollout_completes_on_real_agents(fleet: Fleet) -> None:
    rollout_id = _create(fleet, "1,100%", 1.0)
    assert wait_until(lambda: _phase(fleet, rollout_id) == "completed", 120), fleet.cli(
        "rollouts", "status", rollout_id
    )
    view = fleet.cli("rollouts", "status", rollout_id)
    assert [w["status"] for w in view["waves"]] == ["passed", "passed"]
    assert {d["status"] for d in view["devices"].values()} == {"succeeded"}
    assert sorted(d["wave"] for d in view["devices"].values()) == [0, 1, 1, 1]
    install = next(g for g in view["waves"][0]["gates"] if g["gate"] == "install")
    assert install["verdict"] == "pass" and install["numbers"]  # the numbers that decided
    sent = fleet.commands(rollout_id)
    assert len(sent) == DEVICES and {c.status for c in sent} == {"ok"}  # one deploy each
    assert all(str(c.result["package_id"]).startswith(fleet.package.model_name) for c in sent)
    canary = next(c for c in sent if view["devices"][c.device_id]["wave"] == 0)
    rest = [c for c in sent if c is not canary]
    assert canary.acked_at is not None
    assert min(c.created_at for c in rest) >= canary.acked_at + 1.0  # after the bake
    assert fleet.plane.services is not None
    actions = {
        e.action
        for e in fleet.plane.services.repos.audit.list(
            subject=f"rollout:{rollout_id}", limit=1000
        ).items
    }
    assert {"rollout.create", "rollout.wave_passed", "rollout.promoted"} <= actions


def test_pause_holds_the_next_wave_and_resume_finishes_it(fleet: Fleet) -> None:
    rollout_id = _create(fleet, "1,100%", 0.5)
    paused = fleet.cli("rollouts", "pause", rollout_id, "--reason", "look first")
    assert paused["phase"] == "paused"
    assert wait_until(lambda: {c.status for c in fleet.commands(rollout_id)} == {"ok"}, 60)
    time.sleep(3.0)  # ~10 ticks and well past the bake: nothing more goes out while paused
    assert len(fleet.commands(rollout_id)) == 1
    assert _phase(fleet, rollout_id) == "paused"
    assert fleet.cli("rollouts", "resume", rollout_id)["phase"] == "running"
    assert wait_until(lambda: _phase(fleet, rollout_id) == "completed", 120)
    assert len(fleet.commands(rollout_id)) == DEVICES
    pauses = fleet.plane.services.repos.audit.list(action="rollout.pause").items  # type: ignore[union-attr]
    assert [(e.actor, e.detail["reason"]) for e in pauses] == [("ci", "look first")]
