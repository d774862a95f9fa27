"""A small simulated fleet (the benchmark's, benchmarks/fleet_sim.py) through a real control plane.

30 simulated devices, half on MQTT (the embedded mosquitto) and half on gRPC, enroll
with tokens minted in one batch, and a 3-wave rollout created through the REST API
completes: every device downloaded, verified and installed the package exactly
once, got one deploy command, and no wave started before the previous one's last
ack and its bake. Correctness only; the timings are the benchmark's (bench_fleet.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.fleet_sim import DeviceSpec, Worker
from control_plane.api.client import ApiClient
from control_plane.server import ControlPlane, ServeOptions
from control_plane.services.audit import AuditService
from control_plane.services.tokens import Principal, TokenService
from control_plane.store.records import ModelCard, Package
from edge_agent.package import load_public_key
from tests.integration.transport_support import wait_until

pytestmark = pytest.mark.integration

DEVICES = 30
BAKE_S = 0.5
PROFILE = "x86-64-generic"


@pytest.fixture()
def plane(tmp_path: Path, keys: Any, request: pytest.FixtureRequest) -> Iterator[ControlPlane]:
    tick = getattr(request, "param", 0.3)
    cp = ControlPlane(
        ServeOptions(
            data_dir=tmp_path / "cp",
            public_key=keys.public,
            grpc_address="127.0.0.1:0",
            http_address="127.0.0.1:0",
            mqtt=True,
            rollout_tick_seconds=tick,
            rollout_wake_seconds=0.1,
        )
    ).start()
    try:
        yield cp
    finally:
        cp.stop()


def _catalog(plane: ControlPlane, package: Path) -> Package:
    """The package registered, its model version deployable."""
    assert plane.services is not None
    registered = plane.services.packages.register(package, "test-operator")
    repos, now = plane.services.repos, time.time()
    model, version = registered.model_name, registered.model_version
    repos.models.add(model, "digits", "ml", now)
    repos.versions.add(model, version, ModelCard("digits", "sklearn digits", "ml"), None, now)
    repos.versions.set_stage(model, version, "registered", "compiled", now)
    return registered


def _fleet(plane: ControlPlane, ids: list[str], public_key: Path, state: Path) -> Worker:
    """The devices enrolled (tokens minted in one batch), half on MQTT, labelled, connected."""
    services = plane.services
    assert services is not None and plane.mqtt_port is not None
    tokens = services.enrollment.create_tokens("test-operator", ids)
    specs = [
        DeviceSpec(device_id, "mqtt" if i % 2 else "grpc", token)
        for i, (device_id, token) in enumerate(zip(ids, tokens, strict=True))
    ]
    worker = Worker().start(
        specs, f"127.0.0.1:{plane.grpc_port}", plane.mqtt_port, load_public_key(public_key), state
    )
    for device_id in ids:
        services.devices.set_labels(device_id, {"fleet": "sim"}, "test-operator")
        services.devices.report(device_id, profile_id=PROFILE)
    return worker


def test_a_three_wave_rollout_reaches_every_simulated_device_once(
    plane: ControlPlane, package: Path, keys: Any, tmp_path: Path
) -> None:
    services = plane.services
    assert services is not None
    registered = _catalog(plane, package)
    model, version, repos = registered.model_name, registered.model_version, services.repos
    ids = [f"sim-{i:04d}" for i in range(DEVICES)]
    worker = _fleet(plane, ids, keys.public, tmp_path / "fleet")
    try:
        _, operator = TokenService(repos, AuditService(repos.audit)).create(
            "ci", "operator", Principal("test", "admin")
        )
        client = ApiClient(f"http://127.0.0.1:{plane.http_port}", operator)
        spec = {
            "model": model,
            "version": version,
            "target": {"kind": "devices", "selector": {"fleet": "sim"}},
            "waves": [{"count": 3}, {"percent": 30}, {"percent": 100}],
            "bake_s": BAKE_S,
            "min_finished": 1,
            "device_timeout_s": 60,
            "disruption_budget": 10,
            "gates": {"error_rate": {"enabled": False}, "latency": {"enabled": False}},
        }
        rollout_id = client.request("POST", "/api/v1/rollouts", body=spec)["summary"]["id"]

        def phase() -> str:
            path = f"/api/v1/rollouts/{rollout_id}"
            return str(client.request("GET", path)["summary"]["phase"])

        assert wait_until(lambda: phase() != "running", 120) and phase() == "completed"
        view = client.request("GET", f"/api/v1/rollouts/{rollout_id}")
    finally:
        worker.close()
    devices = worker.report()["devices"]
    assert sorted(devices) == ids
    # every device, the MQTT half and the gRPC half: one download-verify-install, of this package
    for device_id, seen in devices.items():
        assert [i["sha256"] for i in seen["installs"]] == [registered.sha256], device_id
    sent = [
        c
        for c in services.commands.list(kind="deploy", limit=1000).items
        if c.body.get("rollout") == rollout_id
    ]
    assert sorted(c.device_id for c in sent) == ids  # one deploy command each
    assert {c.status for c in sent} == {"ok"}
    assert {c.result["package_id"] for c in sent} == {registered.package_id}
    wave_of = {d: s["wave"] for d, s in view["devices"].items()}
    assert [sum(1 for w in wave_of.values() if w == i) for i in range(3)] == [3, 9, 18]
    for index in (1, 2):  # a wave starts after the previous one's last ack and its bake
        last_ack = max(c.acked_at or 0.0 for c in sent if wave_of[c.device_id] == index - 1)
        first_sent = min(c.created_at for c in sent if wave_of[c.device_id] == index)
        assert first_sent >= last_ack + BAKE_S
    assert [w["status"] for w in view["waves"]] == ["passed", "passed", "passed"]


@pytest.mark.parametrize("plane", [600.0], indirect=True)  # the periodic tick never comes
def test_acks_and_bake_ends_wake_the_rollout_ticker(
    plane: ControlPlane, package: Path, keys: Any, tmp_path: Path
) -> None:
    """Each wave's acks, and its bake's end, move the rollout on without waiting for the
    ticker's period."""
    registered = _catalog(plane, package)
    model, version = registered.model_name, registered.model_version
    worker = _fleet(plane, [f"sim-{i}" for i in range(4)], keys.public, tmp_path / "fleet")
    try:
        spec = {
            "model": model,
            "version": version,
            "target": {"kind": "devices", "selector": {"fleet": "sim"}},
            "waves": [{"count": 1}, {"percent": 100}],
            "bake_s": 1,
            "min_finished": 1,
            "gates": {"error_rate": {"enabled": False}, "latency": {"enabled": False}},
        }
        rollout = plane.rollouts
        assert rollout is not None
        made = rollout.create(spec, Principal("test", "operator"))
        assert wait_until(lambda: rollout.get(made.id).phase == "completed", 60)
    finally:
        worker.close()
    assert all(len(d["installs"]) == 1 for d in worker.report()["devices"].values())
