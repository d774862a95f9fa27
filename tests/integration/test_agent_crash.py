"""SIGKILL the agent at every install step; on restart it serves a verified model.

The agent (``fleetcast-agent run``, a real process) gets
FLEETCAST_AGENT_CRASH_AT=<point> and kills itself with SIGKILL there while
installing release 2 over release 1. The restarted agent must serve a model
whose slot file matches the pointer's sha256 and signature, with no journal
or temporary file left, and the install either finished (reported once) or
cleanly abandoned (reported).
"""

from __future__ import annotations

import json
import signal
import sqlite3
from pathlib import Path
from typing import Any

import grpc
import pytest
from edge_support import AgentProcess, sha256

from edge_agent.agent import Agent
from edge_agent.install import CRASH_POINTS
from edge_agent.package import load_public_key, open_package
from edge_agent.proto.fleetcast.v1 import scoring_pb2 as pb
from edge_agent.proto.fleetcast.v1 import scoring_pb2_grpc as pb_grpc
from edge_agent.settings import Settings
from edge_agent.slots import SlotStore

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "digits-mlp"


@pytest.fixture(scope="module")
def release2(edge_packages: Any) -> Path:
    return edge_packages.release(2)


def prepare_state(state: Path, packages: Any) -> None:
    agent = Agent(Settings(state_dir=state, public_key=packages.public_key, device_id="d"))
    agent.start(background=False)
    agent.install_file(packages.onnx)
    agent.close()


def statuses(state: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(state / "outbox.sqlite") as db:
        rows = db.execute("SELECT payload FROM messages WHERE kind = 'status' ORDER BY id")
        return [json.loads(r[0]) for r in rows]


def assert_serving_verified(agent: AgentProcess, state: Path, packages: Any) -> int:
    """The release the restarted agent serves, after checking it thoroughly."""
    store = SlotStore(state / "models" / MODEL)
    assert store.journal() is None, "install journal left behind"
    assert store.stray_files() == []
    pointer = store.pointer()
    assert pointer is not None
    active = store.package_path(pointer.active.slot)
    assert sha256(active) == pointer.active.sha256
    package = open_package(active, load_public_key(packages.public_key))
    assert package.manifest.release == pointer.active.release
    with grpc.insecure_channel(agent.address) as channel:
        stub = pb_grpc.EdgeScoringStub(channel)
        desc = stub.DescribeModel(pb.DescribeModelRequest(name=MODEL), timeout=10)
        assert desc.loaded and desc.release == pointer.active.release
        assert desc.sha256 == pointer.active.sha256
        rows = packages.x[:2]
        reply = stub.Predict(
            pb.PredictRequest(
                name=MODEL,
                inputs=[
                    pb.Tensor(
                        name="input", dtype="float32", shape=list(rows.shape), data=rows.tobytes()
                    )
                ],
            ),
            timeout=10,
        )
        assert list(reply.outputs[0].shape) == [2, 10]
    return int(desc.release)


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_sigkill_during_install(
    point: str, tmp_path: Path, edge_packages: Any, release2: Path
) -> None:
    state = tmp_path / "state"
    prepare_state(state, edge_packages)
    crashing = AgentProcess(state, edge_packages.public_key, {"FLEETCAST_AGENT_CRASH_AT": point})
    result = crashing.install(release2)
    assert result.returncode != 0, result.stdout
    assert crashing.wait() == -signal.SIGKILL

    restarted = AgentProcess(state, edge_packages.public_key)
    try:
        release = assert_serving_verified(restarted, state, edge_packages)
    finally:
        assert restarted.stop() == 0
    events = [s["event"] for s in statuses(state)]
    if point == "received":  # nothing was written yet: the control plane re-sends
        assert release == 1 and events == ["installed"]
    else:  # the source file is still there: the install is finished, reported once
        assert release == 2
        assert events == ["installed", "installed"]


def test_install_abandoned_when_nothing_is_left_to_resume(
    tmp_path: Path, edge_packages: Any, release2: Path
) -> None:
    state = tmp_path / "state"
    prepare_state(state, edge_packages)
    source = tmp_path / "incoming.fcpkg"
    source.write_bytes(release2.read_bytes())
    env = {"FLEETCAST_AGENT_CRASH_AT": "stage.partial"}
    crashing = AgentProcess(state, edge_packages.public_key, env)
    crashing.install(source)
    assert crashing.wait() == -signal.SIGKILL
    source.unlink()
    restarted = AgentProcess(state, edge_packages.public_key)
    try:
        assert assert_serving_verified(restarted, state, edge_packages) == 1
    finally:
        restarted.stop()
    last = statuses(state)[-1]
    assert last["event"] == "install_abandoned" and last["step"] == "stage"
    assert not SlotStore(state / "models" / MODEL).package_path("b").exists()


def test_crash_during_recovery_is_safe_to_repeat(
    tmp_path: Path, edge_packages: Any, release2: Path
) -> None:
    state = tmp_path / "state"
    prepare_state(state, edge_packages)
    env = {"FLEETCAST_AGENT_CRASH_AT": "selftest"}
    crashing = AgentProcess(state, edge_packages.public_key, env)
    crashing.install(release2)
    assert crashing.wait() == -signal.SIGKILL
    with pytest.raises(RuntimeError, match="agent exited"):
        AgentProcess(state, edge_packages.public_key, env)  # recovery resumes, crashes again
    restarted = AgentProcess(state, edge_packages.public_key)
    try:
        assert assert_serving_verified(restarted, state, edge_packages) == 1
    finally:
        restarted.stop()
    assert statuses(state)[-1]["event"] == "install_abandoned"
