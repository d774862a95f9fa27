"""The health watch outlives a restart; a rolled-back package is not installed again by default."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_install import Clock, make_agent

from edge_agent.transport.base import Command
from edge_agent.transport.memory import InMemoryTransport

pytestmark = pytest.mark.slow


def _break(agent: Any) -> None:
    """Callers' requests fail against the new version (a breaking change)."""
    for _ in range(10):
        with pytest.raises(Exception, match="dimension"):
            agent.predict("digits-mlp", {"input": np.zeros((1, 63), np.float32)})


def test_watch_survives_a_restart_during_the_bake(tmp_path: Path, edge_packages: Any) -> None:
    clock = Clock()
    settings = {"clock": clock, "bake_seconds": 60, "health_min_requests": 10}
    agent = make_agent(tmp_path / "state", edge_packages, **settings)
    try:
        agent.install_file(edge_packages.onnx)
        for row in edge_packages.x[:20]:
            agent.predict("digits-mlp", {"input": row})
        agent.install_file(edge_packages.release(2))
        clock.now += 10
    finally:
        agent.close()
    restarted = make_agent(tmp_path / "state", edge_packages, **settings)
    try:
        watch = restarted.watchlist.watches["digits-mlp"]
        assert watch.package_id.endswith("-r2") and watch.started_at == 1_000.0
        assert watch.baseline is not None and watch.baseline.requests == 20
        _break(restarted)
        clock.now += 5
        assert restarted.check_health()["digits-mlp"].verdict == "breached"
        assert restarted.models["digits-mlp"].manifest.release == 1
        assert restarted.watchlist.watches == {}
    finally:
        restarted.close()


def test_rolled_back_package_needs_force(tmp_path: Path, edge_packages: Any) -> None:
    clock = Clock()
    transport = InMemoryTransport()
    agent = make_agent(
        tmp_path / "state",
        edge_packages,
        transport,
        clock=clock,
        bake_seconds=60,
        health_min_requests=10,
    )
    try:
        agent.install_file(edge_packages.onnx)
        bad = edge_packages.release(2).read_bytes()
        sha = hashlib.sha256(bad).hexdigest()
        transport.offer_package(sha, bad)
        agent.handle_command(Command("c1", "deploy", {"sha256": sha}, execution_version=1))
        assert agent.models["digits-mlp"].manifest.release == 2
        _break(agent)
        clock.now += 5
        assert agent.check_health()["digits-mlp"].verdict == "breached"
        assert agent.watchlist.quarantine[sha].startswith("error rate")

        agent.handle_command(Command("c2", "deploy", {"sha256": sha}, execution_version=2))
        refused = agent._command_log.result(2)
        assert refused is not None and not refused.ok
        assert "rolled back on this device after a health breach" in refused.error
        assert agent.models["digits-mlp"].manifest.release == 1

        forced = {"sha256": sha, "force": True}
        agent.handle_command(Command("c3", "deploy", forced, execution_version=3))
        assert agent.models["digits-mlp"].manifest.release == 2
    finally:
        agent.close()
