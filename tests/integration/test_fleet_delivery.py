"""Real agents on both transports: deploy, score, lose the link, and count every row once."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from control_plane.server import ControlPlane
from edge_agent.agent import Agent
from edge_agent.settings import Settings
from edge_agent.transport.factory import make_transport, save_credentials
from tests.integration.transport_support import enroll_device, wait_until

pytestmark = pytest.mark.integration


def _agent(plane: ControlPlane, kind: str, device_id: str, keys: Any, tmp_path: Path) -> Agent:
    state = tmp_path / device_id
    save_credentials(state, enroll_device(plane, device_id))
    port = plane.grpc_port if kind == "grpc" else plane.mqtt_port
    settings = Settings(
        state_dir=state,
        public_key=keys.public,
        device_id=device_id,
        window_seconds=0.3,
        send_interval_seconds=0.2,
        server=f"{kind}://127.0.0.1:{port}",
    )
    assert settings.server is not None
    agent = Agent(settings, make_transport(settings.server, state))
    agent.start()
    return agent


def _deploy(plane: ControlPlane, agent: Agent, package: Path) -> str:
    assert plane.services is not None
    sha = hashlib.sha256(package.read_bytes()).hexdigest()
    record = plane.services.commands.send(
        agent.settings.device_id, "deploy", {"sha256": sha}, "test-operator"
    )
    assert wait_until(lambda: plane.services.commands.get(record.id).status != "pending")  # type: ignore[union-attr]
    return plane.services.commands.get(record.id).status


def _score(agent: Agent, rows: np.ndarray, seconds: float) -> int:
    """Predict batches of 1-7 rows for ``seconds``; returns the rows scored."""
    scored = 0
    deadline = time.monotonic() + seconds
    rng = np.random.default_rng(0)
    while time.monotonic() < deadline:
        n = int(rng.integers(1, 8))
        start = int(rng.integers(0, len(rows) - n))
        agent.predict("digits-mlp", {"input": rows[start : start + n]})
        scored += n
        time.sleep(0.005)
    return scored


def _ingested_rows(plane: ControlPlane, device_id: str) -> tuple[int, int]:
    assert plane.services is not None
    windows = plane.services.ingest.all(device_id, "telemetry_window")
    return sum(json.loads(w.body_json)["rows"] for w in windows), len(windows)


@pytest.mark.parametrize("kind", ["grpc", "mqtt"])
def test_every_window_arrives_once_across_an_outage(
    plane: ControlPlane, package: Path, keys: Any, tmp_path: Path, digits_mlp: Any, kind: str
) -> None:
    agent = _agent(plane, kind, f"dev-{kind}", keys, tmp_path)
    try:
        assert _deploy(plane, agent, package) == "ok"
        assert "digits-mlp" in agent.models
        rows = digits_mlp.x_validation
        scored = _score(agent, rows, 1.0)
        # the link goes down for several windows
        if kind == "grpc":
            assert plane.grpc is not None
            plane.grpc.stop(grace=None).wait(5)
        else:
            assert plane.broker is not None
            plane.broker.stop()
        scored += _score(agent, rows, 2.0)
        assert agent.outbox is not None
        assert agent.outbox.stats()["messages"] >= 3, "windows should wait in the outbox"
        if kind == "grpc":
            plane.restart_grpc()
        else:
            assert plane.broker is not None
            plane.broker.start()
        scored += _score(agent, rows, 1.0)
        agent.flush_windows()
        assert wait_until(lambda: _ingested_rows(plane, agent.settings.device_id)[0] >= scored, 60)
        time.sleep(1.0)  # anything resent late would show up now as a duplicate
        ingested, windows = _ingested_rows(plane, agent.settings.device_id)
        assert ingested == scored
        assert windows >= 8
        assert agent.outbox.stats() == {"messages": 0, "bytes": 0, "dropped": 0}
    finally:
        agent.close()


@pytest.mark.parametrize("kind", ["grpc", "mqtt"])
def test_commands_run_once_and_bad_packages_are_refused(
    plane: ControlPlane, package: Path, keys: Any, tmp_path: Path, kind: str
) -> None:
    assert plane.services is not None
    agent = _agent(plane, kind, f"dev-{kind}", keys, tmp_path)
    try:
        assert _deploy(plane, agent, package) == "ok"
        installs = agent._command_log.result(1)
        assert installs is not None and installs.detail["package_id"].startswith("digits-mlp")
        # the same command delivered again (a lost ack): acked again, not installed again
        pointer = agent.installed()["digits-mlp"]
        assert plane.services.commands.pending(agent.settings.device_id) == []
        from edge_agent.transport.base import Command

        (record,) = plane.services.commands.list(device_id=agent.settings.device_id).items
        agent.handle_command(
            Command(record.id, "deploy", record.body, execution_version=record.execution_version)
        )
        assert agent.installed()["digits-mlp"] == pointer
        # a deploy of a package the catalog does not hold is refused at the source
        with pytest.raises(Exception, match="not in the catalog"):
            plane.services.commands.send(
                agent.settings.device_id, "deploy", {"sha256": "e" * 64}, "op"
            )
        # a command kind the agent does not know is acked as failed, and it keeps serving
        odd = plane.services.commands.send(agent.settings.device_id, "capture", {"rate": 7}, "op")
        assert wait_until(lambda: plane.services.commands.get(odd.id).status == "failed")  # type: ignore[union-attr]
        result = plane.services.commands.get(odd.id).result
        assert result is not None
        assert "capture rate 7.0 is not within [0, 1]" in result["error"]
        outputs, _ = agent.predict("digits-mlp", {"input": np.zeros((1, 64), np.float32)})
        assert outputs["output"].shape == (1, 10)
    finally:
        agent.close()
