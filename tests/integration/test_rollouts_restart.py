"""SIGKILL of ``fleetcast serve`` mid-rollout: started again, the rollout continues where it
was and no device gets a second deploy (four real ``fleetcast-agent`` processes over gRPC)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from edge_support import AgentProcess

from control_plane.api.client import ApiClient
from control_plane.app import build_services
from control_plane.server import ServeProcess
from control_plane.services.audit import AuditService
from control_plane.services.tokens import Principal, TokenService
from control_plane.settings import Settings
from control_plane.signing import PUBLIC_NAME
from control_plane.store.records import ModelCard
from edge_agent.transport.factory import save_credentials
from edge_agent.transport.grpc import enroll
from tests.conftest import free_port
from tests.integration.transport_support import HOST, wait_until

pytestmark = pytest.mark.integration

DEVICES = 4


def test_sigkill_mid_rollout_then_restart_continues_without_double_deploys(
    tmp_path: Path, keys: Any, package: Path
) -> None:
    data_dir = tmp_path / "cp"
    (data_dir / "keys").mkdir(parents=True, mode=0o700)
    shutil.copy(keys.public, data_dir / "keys" / PUBLIC_NAME)
    grpc_port, http_port = free_port(), free_port()
    ports = ("--grpc", f"127.0.0.1:{grpc_port}", "--http", f"127.0.0.1:{http_port}")
    serve = ServeProcess(data_dir, *ports)
    services = build_services(Settings(data_dir=data_dir))
    agents: list[AgentProcess] = []
    try:
        pkg = services.packages.register(package, "test-operator")
        repos = services.repos
        card = ModelCard("handwritten digits", "sklearn digits", "ml")
        repos.models.add(pkg.model_name, "digits", "ml", time.time())
        repos.versions.add(pkg.model_name, pkg.model_version, card, None, time.time())
        repos.versions.set_stage(
            pkg.model_name, pkg.model_version, "registered", "compiled", time.time()
        )
        for i in range(DEVICES):
            device_id = f"edge-{i}"
            token = services.enrollment.create_token("test-operator", device_id)
            state = tmp_path / device_id
            save_credentials(state, enroll(f"127.0.0.1:{grpc_port}", token, device_id, HOST))
            services.devices.set_labels(device_id, {"site": "lab"}, "test-operator")
            services.devices.report(device_id, profile_id="x86-64-generic")
            env = {
                "FLEETCAST_AGENT_DEVICE_ID": device_id,
                "FLEETCAST_AGENT_SERVER": f"grpc://127.0.0.1:{grpc_port}",
            }
            agents.append(AgentProcess(state, keys.public, env))
        _, operator = TokenService(repos, AuditService(repos.audit)).create(
            "ci", "operator", Principal("test", "admin")
        )
        client = ApiClient(f"http://127.0.0.1:{http_port}", operator)
        spec = {
            "model": pkg.model_name,
            "version": pkg.model_version,
            "target": {"kind": "devices", "selector": {"site": "lab"}},
            "waves": [{"count": 1}, {"count": 1}, {"percent": 100}],
            "bake_s": 2,
            "min_finished": 1,
            "gates": {"error_rate": {"enabled": False}, "latency": {"enabled": False}},
        }
        rollout_id = client.request("POST", "/api/v1/rollouts", body=spec)["summary"]["id"]

        def waves() -> list[str]:
            got = client.request("GET", f"/api/v1/rollouts/{rollout_id}")
            return [w["status"] for w in got["summary"]["waves"]]

        assert wait_until(lambda: waves()[0] == "passed", 60), waves()
        serve.proc.send_signal(signal.SIGKILL)  # mid-rollout: wave 1 under way
        serve.proc.wait(10)
        _stop_orphaned_broker(data_dir / "mosquitto")
        before = _deploys(services, rollout_id)
        assert 1 <= len(before) < DEVICES, "killed after the canary, before the last wave"
        serve = ServeProcess(data_dir, *ports)
        assert wait_until(lambda: waves() == ["passed", "passed", "passed"], 120), waves()
        got = client.request("GET", f"/api/v1/rollouts/{rollout_id}")
        assert got["summary"]["phase"] == "completed"
        assert {d["status"] for d in got["devices"].values()} == {"succeeded"}
        sent = _deploys(services, rollout_id)
        devices = [f"edge-{i}" for i in range(DEVICES)]
        assert sorted(c.device_id for c in sent) == devices
        assert {c.status for c in sent} == {"ok"}  # one deploy per device, across the kill
        assert {c.id for c in before} <= {c.id for c in sent}
        # and by the agents' own reports: each installed the package once
        assert wait_until(lambda: _installs(services, pkg.sha256) == dict.fromkeys(devices, 1), 30)
    finally:
        for agent in agents:
            agent.stop()
        serve.stop()
        services.close()


def _stop_orphaned_broker(folder: Path) -> None:
    """The killed serve's embedded mosquitto outlives it: stop that one process, by pid."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "mosquitto" in command and str(folder) in command:
            os.kill(int(proc.name), signal.SIGTERM)


def _installs(services: Any, sha256: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for upload in services.ingest.all(kind="status"):
        body = json.loads(upload.body_json)
        if body.get("event") == "installed" and body.get("sha256") == sha256:
            counts[upload.device_id] = counts.get(upload.device_id, 0) + 1
    return counts


def _deploys(services: Any, rollout_id: str) -> list[Any]:
    found = services.commands.list(kind="deploy", limit=1000).items
    return [c for c in found if c.body.get("rollout") == rollout_id]
