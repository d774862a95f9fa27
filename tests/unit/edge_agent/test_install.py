"""Installs through the A/B slots on real packages: verify, self-test, switch, roll back."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from edge_support import tracemalloc_growth

from edge_agent.agent import Agent
from edge_agent.errors import InstallError, NotFound
from edge_agent.settings import Settings
from edge_agent.slots import SlotStore
from edge_agent.transport.base import Command
from edge_agent.transport.memory import InMemoryTransport

pytestmark = pytest.mark.slow


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def make_agent(
    state: Path, packages: Any, transport: InMemoryTransport | None = None, **overrides: Any
) -> Agent:
    clock = overrides.pop("clock", Clock())
    settings = Settings(
        state_dir=state, public_key=packages.public_key, device_id="dev-1", **overrides
    )
    agent = Agent(settings, transport, clock=clock)
    agent.start(background=False)
    return agent


def statuses(state: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(state / "outbox.sqlite") as db:
        rows = db.execute("SELECT payload FROM messages WHERE kind = 'status' ORDER BY id")
        return [json.loads(r[0]) for r in rows]


def test_install_switches_slots_and_serves(tmp_path: Path, edge_packages: Any) -> None:
    agent = make_agent(tmp_path / "state", edge_packages)
    try:
        model = agent.install_file(edge_packages.onnx)
        assert model.manifest.release == 1
        outputs, prediction_id = agent.predict("digits-mlp", {"input": edge_packages.x[:4]})
        assert outputs["output"].shape == (4, 10)
        assert prediction_id
        store = SlotStore(tmp_path / "state" / "models" / "digits-mlp")
        pointer = store.pointer()
        assert pointer is not None and pointer.active.slot == "a" and pointer.previous is None
        agent.install_file(edge_packages.release(2))
        pointer = store.pointer()
        assert pointer is not None
        assert (pointer.active.slot, pointer.active.release) == ("b", 2)
        assert pointer.previous is not None and pointer.previous.release == 1
        assert store.journal() is None
        assert agent.models["digits-mlp"].manifest.release == 2
    finally:
        agent.close()
    events = [s["event"] for s in statuses(tmp_path / "state")]
    assert events == ["installed", "installed"]


def _refused(agent: Agent, package: Path) -> InstallError:
    with pytest.raises(InstallError) as info:
        agent.install_file(package)
    return info.value


def test_self_test_failure_keeps_the_active_slot(tmp_path: Path, edge_packages: Any) -> None:
    agent = make_agent(tmp_path / "state", edge_packages)
    try:
        agent.install_file(edge_packages.onnx)
        error = _refused(agent, edge_packages.bad_vectors())
        assert (error.step, error.check) == ("selftest", "selftest")
        assert "max abs error" in error.detail
        assert agent.models["digits-mlp"].manifest.release == 1
        agent.predict("digits-mlp", {"input": edge_packages.x[:1]})
        store = SlotStore(tmp_path / "state" / "models" / "digits-mlp")
        assert not store.package_path("b").exists()
        assert store.journal() is None
    finally:
        agent.close()
    failed = statuses(tmp_path / "state")[-1]
    assert failed["event"] == "install_failed" and failed["step"] == "selftest"


def test_corrupted_download_is_refused_as_hash(tmp_path: Path, edge_packages: Any) -> None:
    data = bytearray(edge_packages.release(2).read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupt = tmp_path / "corrupt.fcpkg"
    corrupt.write_bytes(bytes(data))
    agent = make_agent(tmp_path / "state", edge_packages)
    try:
        agent.install_file(edge_packages.onnx)
        error = _refused(agent, corrupt)
        assert error.check in {"hash", "format"}
        # with the expected sha256 from the control plane, the hash check names it
        with pytest.raises(InstallError) as info:
            agent.install_bytes(bytes(data), expected_sha256="0" * 64)
        assert info.value.check == "hash" and info.value.step == "verify"
        assert agent.models["digits-mlp"].manifest.release == 1
    finally:
        agent.close()


def test_wrong_profile_is_refused(tmp_path: Path, edge_packages: Any) -> None:
    agent = make_agent(tmp_path / "state", edge_packages)
    try:
        error = _refused(agent, edge_packages.wrong_profile())
        assert error.check == "profile" and "fleetcast_imaginary" in error.detail
        assert "digits-mlp" not in agent.models
    finally:
        agent.close()


def test_anti_rollback_refuses_an_older_release(tmp_path: Path, edge_packages: Any) -> None:
    agent = make_agent(tmp_path / "state", edge_packages)
    try:
        agent.install_file(edge_packages.release(3))
        error = _refused(agent, edge_packages.release(2))
        assert error.check == "release" and "older than installed release 3" in error.detail
        agent.install_file(edge_packages.release(3))  # the same release again is fine
    finally:
        agent.close()


def test_signature_from_another_key_is_refused(tmp_path: Path, edge_packages: Any) -> None:
    from control_plane.signing import generate_keypair

    _, other_public = generate_keypair(tmp_path / "other")
    settings = Settings(state_dir=tmp_path / "state", public_key=other_public, device_id="d")
    agent = Agent(settings)
    agent.start(background=False)
    try:
        assert _refused(agent, edge_packages.onnx).check == "signature"
    finally:
        agent.close()


def test_breached_health_watch_rolls_back(tmp_path: Path, edge_packages: Any) -> None:
    clock = Clock()
    agent = make_agent(
        tmp_path / "state", edge_packages, clock=clock, bake_seconds=60, health_min_requests=10
    )
    try:
        agent.install_file(edge_packages.onnx)
        for row in edge_packages.x[:20]:
            agent.predict("digits-mlp", {"input": row})
        agent.install_file(edge_packages.release(2))
        assert agent.check_health()["digits-mlp"].verdict == "pending"
        good = edge_packages.x[:1]
        for _ in range(5):
            agent.predict("digits-mlp", {"input": good})
        for _ in range(10):  # callers' requests now fail: a breaking change in this version
            with pytest.raises(Exception, match="dimension"):
                agent.predict("digits-mlp", {"input": np.zeros((1, 63), np.float32)})
        clock.now += 5
        decision = agent.check_health()["digits-mlp"]
        assert decision.verdict == "breached" and "error rate" in decision.reason
        assert agent.models["digits-mlp"].manifest.release == 1
        pointer = SlotStore(tmp_path / "state" / "models" / "digits-mlp").pointer()
        assert pointer is not None and pointer.active.release == 1
        assert "rolled back" in pointer.note
        agent.predict("digits-mlp", {"input": good})
    finally:
        agent.close()
    rolled = [s for s in statuses(tmp_path / "state") if s["event"] == "rolled_back"]
    assert len(rolled) == 1 and rolled[0]["from_package_id"].endswith("-r2")


def test_healthy_watch_ends_after_bake(tmp_path: Path, edge_packages: Any) -> None:
    clock = Clock()
    agent = make_agent(
        tmp_path / "state", edge_packages, clock=clock, bake_seconds=60, health_min_requests=5
    )
    try:
        agent.install_file(edge_packages.onnx)
        agent.install_file(edge_packages.release(2))
        for _ in range(10):
            agent.predict("digits-mlp", {"input": edge_packages.x[:2]})
        clock.now += 61
        assert agent.check_health()["digits-mlp"].verdict == "healthy"
        assert agent.check_health() == {}
        assert agent.models["digits-mlp"].manifest.release == 2
    finally:
        agent.close()


def test_install_command_over_in_memory_transport(tmp_path: Path, edge_packages: Any) -> None:
    transport = InMemoryTransport()
    agent = make_agent(tmp_path / "state", edge_packages, transport)
    try:
        package = edge_packages.litert
        digest = __import__("hashlib").sha256(package.read_bytes()).hexdigest()
        transport.offer_package(digest, package.read_bytes())
        agent.handle_command(Command("c1", "install", {"sha256": digest}))
        assert agent.models["digits-mlp"].manifest.runtime == "litert"
        agent.predict("digits-mlp", {"input": edge_packages.x[:3]})
        agent.handle_command(Command("c2", "install", {"sha256": "f" * 64}))  # not on offer
        agent.flush_windows()
        assert agent.send_outbox() >= 3
    finally:
        agent.close()
    events = [(m["event"], m.get("command_id")) for m in transport.delivered_of("status")]
    assert ("installed", "c1") in events and ("install_failed", "c2") in events
    windows = transport.delivered_of("telemetry_window")
    assert windows and windows[0]["requests"] == 1 and windows[0]["rows"] == 3


def test_unload_and_load_again(tmp_path: Path, edge_packages: Any) -> None:
    agent = make_agent(tmp_path / "state", edge_packages)
    try:
        agent.install_file(edge_packages.onnx)
        agent.unload_model("digits-mlp")
        with pytest.raises(NotFound):
            agent.predict("digits-mlp", {"input": edge_packages.x[:1]})
        agent.load_model("digits-mlp")
        agent.predict("digits-mlp", {"input": edge_packages.x[:1]})
        with pytest.raises(NotFound):
            agent.load_model("no-such-model")
    finally:
        agent.close()


def test_restart_reverifies_and_serves(tmp_path: Path, edge_packages: Any) -> None:
    agent = make_agent(tmp_path / "state", edge_packages)
    agent.install_file(edge_packages.onnx)
    agent.close()
    again = make_agent(tmp_path / "state", edge_packages)
    try:
        assert again.models["digits-mlp"].manifest.release == 1
    finally:
        again.close()
    # a tampered active slot is not served
    store = SlotStore(tmp_path / "state" / "models" / "digits-mlp")
    path = store.package_path("a")
    path.write_bytes(path.read_bytes()[:-10])
    third = make_agent(tmp_path / "state", edge_packages)
    try:
        assert "digits-mlp" not in third.models
    finally:
        third.close()


def test_outbox_resends_until_acknowledged_across_restart(
    tmp_path: Path, edge_packages: Any
) -> None:
    transport = InMemoryTransport()
    transport.online = False
    agent = make_agent(tmp_path / "state", edge_packages, transport)
    try:
        agent.install_file(edge_packages.onnx)
        agent.predict("digits-mlp", {"input": edge_packages.x[:2]})
        agent.flush_windows()
        assert agent.send_outbox() == 0  # offline: nothing acknowledged, nothing lost
    finally:
        agent.close()
    transport.online = True
    again = make_agent(tmp_path / "state", edge_packages, transport)
    try:
        assert again.send_outbox() == 2
        assert again.send_outbox() == 0  # acknowledged messages are gone
    finally:
        again.close()
    kinds = [m["kind"] for m in transport.delivered]
    assert kinds == ["status", "telemetry_window"]
    sequences = [m["sequence"] for m in transport.delivered]
    assert len(set(sequences)) == 2 and all(m["device_id"] == "dev-1" for m in transport.delivered)


def test_agent_memory_stays_flat_over_many_predictions(tmp_path: Path, edge_packages: Any) -> None:

    agent = make_agent(tmp_path / "state", edge_packages, capture_rate=0.2, max_captures=4)
    try:
        agent.install_file(edge_packages.onnx)
        rows = edge_packages.x

        def run(calls: int) -> None:
            for i in range(calls):
                agent.predict("digits-mlp", {"input": rows[i % 300 : i % 300 + 1 + i % 4]})
                if i % 1000 == 999:
                    agent.flush_windows()
                    assert agent.outbox is not None
                    agent.outbox.ack([m.id for m in agent.outbox.pending(1000)])

        growth = tracemalloc_growth(run, warmup=3_000, calls=10_000)
        assert growth < 512 * 1024, f"agent grew by {growth} bytes over 10,000 predictions"
    finally:
        agent.close()
