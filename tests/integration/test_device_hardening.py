"""Device-side audit findings against a real control plane (gRPC, mosquitto), real agents.

- a huge CaptureData never stalls the outbox: the install report behind it arrives;
- a deploy re-sent after a SIGKILL at the report step keeps the rollback version.
"""

from __future__ import annotations

import hashlib
import json
import signal
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from edge_support import AgentProcess

from control_plane.compiler.package import build_package
from control_plane.server import ControlPlane
from control_plane.signing import load_private_key
from edge_agent.agent import Agent
from edge_agent.core.limits import MAX_MESSAGE_BYTES
from edge_agent.delivery import deliver
from edge_agent.local_api import serve
from edge_agent.outbox import Outbox
from edge_agent.package import read_package
from edge_agent.proto.fleetcast.v1 import scoring_pb2 as pb
from edge_agent.proto.fleetcast.v1 import scoring_pb2_grpc as pb_grpc
from edge_agent.settings import Settings
from edge_agent.slots import SlotStore
from edge_agent.transport.factory import make_transport, save_credentials
from edge_agent.transport.grpc import GrpcTransport
from tests.integration.transport_support import enroll_device, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "digits-mlp"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def resigned(package: Path, keys: Any, release: int, directory: Path) -> Path:
    manifest, _, model = read_package(package.read_bytes())
    manifest = manifest.model_copy(
        update={"release": release, "package_id": manifest.package_id[:-1] + str(release)}
    )
    path = directory / f"{manifest.package_id}.fcpkg"
    path.write_bytes(build_package(manifest, model, load_private_key(keys.private)))
    return path


def statuses(plane: ControlPlane, device_id: str) -> list[dict[str, Any]]:
    assert plane.services is not None
    return [json.loads(u.body_json) for u in plane.services.ingest.all(device_id, "status")]


@pytest.mark.parametrize("kind", ["grpc", "mqtt"])
def test_a_huge_capture_does_not_hold_back_the_install_report(
    plane: ControlPlane, package: Path, keys: Any, tmp_path: Path, kind: str
) -> None:
    device = f"big-{kind}"
    state = tmp_path / device
    save_credentials(state, enroll_device(plane, device))
    port = plane.grpc_port if kind == "grpc" else plane.mqtt_port
    settings = Settings(
        state_dir=state,
        public_key=keys.public,
        device_id=device,
        window_seconds=3600,  # windows close when the test says
        send_interval_seconds=0.2,
        max_captures=64,
        server=f"{kind}://127.0.0.1:{port}",
    )
    assert settings.server is not None
    agent = Agent(settings, make_transport(settings.server, state))
    agent.start()
    server, address = serve(agent, "127.0.0.1:0")
    try:
        agent.install_file(package)
        rng = np.random.default_rng(0)
        tensors = [
            pb.Tensor(
                name=f"t{i}",
                dtype="float32",
                shape=[4, 1024],
                data=rng.random((4, 1024), dtype=np.float32).tobytes(),
            )
            for i in range(240)
        ]
        request = pb.CaptureDataRequest(name=MODEL, prediction_id="app-1", inputs=tensors)
        assert 3_900_000 < request.ByteSize() < 4 * 1024 * 1024  # a 3.9 MB CaptureData
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.EdgeScoringStub(channel)
            stub.CaptureData(request, timeout=30)  # as JSON: a 19 MB window before the caps
        agent.flush_windows()
        agent.install_file(resigned(package, keys, 2, tmp_path))
        assert wait_until(
            lambda: any(
                s.get("event") == "installed" and s.get("release") == 2
                for s in statuses(plane, device)
            ),
            30,
        ), "the install report never reached the control plane"
        assert plane.services is not None
        windows = [
            json.loads(u.body_json) for u in plane.services.ingest.all(device, "telemetry_window")
        ]
        assert windows, "the window with the captures should arrive too"
        for window in windows:
            assert len(json.dumps(window, separators=(",", ":"))) <= MAX_MESSAGE_BYTES
        assert sum(w["captures_dropped"] for w in windows) >= 1
        assert all(
            len(c["inputs"]) <= agent.telemetry_config.max_capture_tensors
            for w in windows
            for c in w["captures"]
        )
    finally:
        server.stop(None)
        agent.close()
        if agent.transport is not None:
            agent.transport.close()


def test_a_deploy_resent_after_a_crash_at_report_keeps_the_rollback_version(
    plane: ControlPlane, package: Path, keys: Any, tmp_path: Path
) -> None:
    assert plane.services is not None
    device = "device-under-test"
    state = tmp_path / "state"
    save_credentials(state, enroll_device(plane, device))
    r1, r2 = package, resigned(package, keys, 2, tmp_path)
    plane.services.packages.register(r2, "test-operator")
    env = {
        "FLEETCAST_AGENT_DEVICE_ID": device,
        "FLEETCAST_AGENT_SERVER": f"grpc://127.0.0.1:{plane.grpc_port}",
        "FLEETCAST_AGENT_SEND_INTERVAL_SECONDS": "0.2",
    }

    def deploy(path: Path) -> str:
        assert plane.services is not None
        return plane.services.commands.send(device, "deploy", {"sha256": sha(path)}, "op").id

    agent = AgentProcess(state, keys.public, env)
    try:
        first = deploy(r1)
        assert wait_until(lambda: plane.services.commands.get(first).status == "ok", 60)  # type: ignore[union-attr]
    finally:
        agent.stop()
    crashing = AgentProcess(state, keys.public, {**env, "FLEETCAST_AGENT_CRASH_AT": "report"})
    second = deploy(r2)
    assert crashing.wait(60) == -signal.SIGKILL
    assert plane.services.commands.get(second).status == "pending"  # never acked: it is sent again
    restarted = AgentProcess(state, keys.public, env)
    try:
        assert wait_until(lambda: plane.services.commands.get(second).status != "pending", 60)  # type: ignore[union-attr]
        assert plane.services.commands.get(second).status == "ok"
        store = SlotStore(state / "models" / MODEL)
        pointer = store.pointer()
        assert pointer is not None and pointer.active.release == 2
        assert pointer.previous is not None and pointer.previous.release == 1
        assert sha(store.package_path(pointer.previous.slot)) == sha(r1)
        back = plane.services.commands.send(device, "rollback", {"model_name": MODEL}, "op").id
        assert wait_until(lambda: plane.services.commands.get(back).status != "pending", 60)  # type: ignore[union-attr]
        assert plane.services.commands.get(back).status == "ok"

        def installed() -> list[int]:
            return [s["release"] for s in statuses(plane, device) if s.get("event") == "installed"]

        assert wait_until(lambda: len(installed()) >= 2, 30)
        assert installed() == [1, 2]  # each install reported once
    finally:
        restarted.stop()


def test_a_message_the_server_refuses_for_size_is_dropped_not_retried_for_ever(
    plane: ControlPlane, tmp_path: Path
) -> None:
    """An outbox written by an older agent (no per-message cap) holds a 9 MB report."""
    device = "old-outbox"
    creds = enroll_device(plane, device)
    outbox = Outbox(tmp_path / "outbox.sqlite")
    outbox.max_message_bytes = 16 * 1024 * 1024  # as before the cap
    for event, pad in (("huge", "x" * (9 * 1024 * 1024)), ("installed", "")):
        outbox.put(
            "status",
            {"device_id": device, "sequence": outbox.next_sequence(), "event": event, "pad": pad},
        )
    transport = GrpcTransport(f"127.0.0.1:{plane.grpc_port}", creds["device_token"], tmp_path)
    try:
        assert deliver(outbox, transport) == 1
    finally:
        transport.close()
    assert outbox.dropped == 1 and outbox.pending() == []
    assert [s["event"] for s in statuses(plane, device)] == ["installed"]
    outbox.close()
