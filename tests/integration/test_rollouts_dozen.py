"""Rollouts on a dozen real ``fleetcast-agent`` processes, half over MQTT (the embedded
mosquitto) and half over gRPC, serving real traffic so the gates read real telemetry.

One fleet for the module (agents start in parallel; each test leaves it as the next one
expects, in file order):

1. a device enrolled in the target whose agent never runs: its deploys time out (with a
   retry) and the wave fails on the install gate;
2. version 1 (the digits MLP) goes out in three waves with the error-rate and latency gates
   on, and a device labelled into the target mid-rollout gets it (the dynamic tail);
3. version 2 (the same compiled MLP released again: a good release) is paused after it started,
   holds while paused, and completes after resume, judged against version 1 on the same
   devices;
4. version 3 is a bad release: a real trained model (the digits CNN) whose self-test passes
   but whose input shape changed, so the fleet's traffic fails on it: the error-rate gate
   trips in wave 0, the two canaries are rolled back (their rollback acks come back) and the
   rest of the fleet never hears of version 3;
5. one more device keeps the agent's own health watch: version 3 makes it roll itself back,
   and the engine counts that device failed (reverted) without sending it a rollback.

Every device installs each version once: counted from the agents' own ``installed`` reports.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from edge_support import AgentProcess

from control_plane.api.client import ApiClient
from control_plane.server import ControlPlane, ServeOptions
from control_plane.services.audit import AuditService
from control_plane.services.tokens import Principal, TokenService
from control_plane.store.records import ModelCard, Package
from edge_agent.proto.fleetcast.v1 import scoring_pb2 as pb
from edge_agent.proto.fleetcast.v1 import scoring_pb2_grpc as pb_grpc
from edge_agent.transport.factory import save_credentials
from tests.integration.transport_support import enroll_device, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LIVE = 12  # edge-0..5 over gRPC, edge-6..11 over MQTT
JOINER = "edge-late"  # runs from the start, labelled into the target mid-rollout (MQTT)
DEAD = "edge-dead"  # enrolled and labelled, its agent never started
PROFILE = "x86-64-generic"
MODEL = "digits-mlp"
GATES = {
    "error_rate": {"min_requests": 30},
    # p95s here are a fraction of a millisecond on two cores shared with other work: the
    # default 1 ms slack would turn scheduling noise into a failed wave
    "latency": {"min_requests": 30, "slack_ms": 20},
    "availability": {"silent_after_s": 60},
}


class Traffic:
    """Clients of every running agent: a batch of 4 validation rows to each, in a loop."""

    def __init__(self, agents: dict[str, AgentProcess], rows: np.ndarray) -> None:
        self.rows = np.ascontiguousarray(rows[:4], dtype=np.float32)
        self.channels = [grpc.insecure_channel(a.address) for a in agents.values()]
        self.stubs = [pb_grpc.EdgeScoringStub(c) for c in self.channels]
        self.answered = 0
        self.refused = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        tensor = pb.Tensor(
            name="input", dtype="float32", shape=list(self.rows.shape), data=self.rows.tobytes()
        )
        request = pb.PredictRequest(name=MODEL, inputs=[tensor])
        while not self._stop.wait(0.05):
            for stub in self.stubs:
                try:
                    stub.Predict(request, timeout=5)
                    self.answered += 1
                except grpc.RpcError:  # not installed yet, or a version that refuses the rows
                    self.refused += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for channel in self.channels:
            channel.close()


@dataclass
class Fleet:
    plane: ControlPlane
    client: ApiClient
    versions: dict[str, Package]
    agents: dict[str, AgentProcess]
    traffic: Traffic
    rollouts: dict[str, str] = field(default_factory=dict)

    @property
    def services(self) -> Any:
        assert self.plane.services is not None
        return self.plane.services

    def create(self, version: str, selector: dict[str, str], **spec: Any) -> str:
        body = {
            "model": MODEL,
            "version": version,
            "target": {"kind": "devices", "selector": selector},
            "waves": [{"percent": 100}],
            "bake_s": 2,
            "min_finished": 1,
            "device_timeout_s": 60,
            "gates": GATES,
            **spec,
        }
        made = self.client.request("POST", "/api/v1/rollouts", body=body)
        return str(made["summary"]["id"])

    def view(self, rollout_id: str) -> dict[str, Any]:
        got: dict[str, Any] = self.client.request("GET", f"/api/v1/rollouts/{rollout_id}")
        return got

    def phase(self, rollout_id: str) -> str:
        return str(self.view(rollout_id)["summary"]["phase"])

    def commands(self, rollout_id: str, kind: str = "deploy") -> list[Any]:
        found = self.services.commands.list(kind=kind, limit=1000).items
        return [c for c in found if c.body.get("rollout") == rollout_id]

    def installs(self, sha256: str) -> dict[str, int]:
        """Per device, how many times its agent reported installing ``sha256``."""
        counts: dict[str, int] = {}
        for upload in self.services.ingest.all(kind="status"):
            body = json.loads(upload.body_json)
            if body.get("event") == "installed" and body.get("sha256") == sha256:
                counts[upload.device_id] = counts.get(upload.device_id, 0) + 1
        return counts

    def running(self, device_id: str) -> str | None:
        slot = self.services.repos.devices.get(device_id).slots.get(MODEL) or {}
        sha = slot.get("sha256")
        return str(sha) if sha else None


def _release(package: Path, version: str, private_key: Path, out: Path) -> Path:
    """``package`` as another version of the same model, signed with the test key."""
    from control_plane.compiler.package import build_package
    from control_plane.signing import load_private_key
    from edge_agent.core.manifest import make_package_id
    from edge_agent.package import read_package

    manifest, _, model_bytes = read_package(package.read_bytes())
    package_id = make_package_id(
        manifest.model_name, version, manifest.profile.id, manifest.release
    )
    manifest = manifest.model_copy(update={"model_version": version, "package_id": package_id})
    out.write_bytes(build_package(manifest, model_bytes, load_private_key(private_key)))
    return out


def _unhealthy(view: dict[str, Any]) -> str:
    """What to print when a rollout did not complete: the gates and the devices not done."""
    waves = [(w["status"], w["gates"]) for w in view["waves"]]
    devices = {d: s for d, s in view["devices"].items() if s["status"] != "succeeded"}
    return json.dumps({"waves": waves, "devices": devices}, indent=1)


def _agent_env(plane: ControlPlane, device_id: str, mqtt: bool) -> dict[str, str]:
    port = plane.mqtt_port if mqtt else plane.grpc_port
    return {
        "FLEETCAST_AGENT_DEVICE_ID": device_id,
        "FLEETCAST_AGENT_SERVER": f"{'mqtt' if mqtt else 'grpc'}://127.0.0.1:{port}",
        "FLEETCAST_AGENT_WINDOW_SECONDS": "1",
        "FLEETCAST_AGENT_SEND_INTERVAL_SECONDS": "0.5",
        # the fleet's gates are under test: the agent's own health watch (which would roll a
        # bad version back by itself after 20 requests) stays out of the way here; its
        # rollbacks reaching the engine are tested in tests/unit/control_plane/services
        "FLEETCAST_AGENT_HEALTH_MIN_REQUESTS": "1000000",
    }


@pytest.fixture(scope="module")
def fleet(
    tmp_path_factory: pytest.TempPathFactory,
    keys: Any,
    package: Path,
    digits_mlp: Any,
    digits_cnn: Any,
    compile_digits: Any,
) -> Iterator[Fleet]:
    # version 2: the same compiled MLP released again as a new version (re-signed, no second
    # compile); version 3: the digits CNN compiled under the MLP's name (a real trained
    # model whose self-test passes, but whose input shape the clients do not send)
    root = tmp_path_factory.mktemp("dozen")
    good = _release(package, "2", keys.private, root / "v2.fcpkg")
    (bad,) = compile_digits(digits_cnn, [PROFILE], model_name=MODEL, model_version="3")
    plane = ControlPlane(
        ServeOptions(
            data_dir=root / "cp",
            public_key=keys.public,
            grpc_address="127.0.0.1:0",
            http_address="127.0.0.1:0",
            mqtt=True,
            rollout_tick_seconds=0.3,
        )
    ).start()
    agents: dict[str, AgentProcess] = {}
    traffic: Traffic | None = None
    try:
        services = plane.services
        assert services is not None
        repos = services.repos
        card = ModelCard("handwritten digits", "sklearn digits", "ml")
        repos.models.add(MODEL, "digits", "ml", time.time())
        versions: dict[str, Package] = {}
        for path in (package, good, Path(bad.path)):
            registered = services.packages.register(path, "test-operator")
            number = registered.model_version
            repos.versions.add(MODEL, number, card, None, time.time())
            repos.versions.set_stage(MODEL, number, "registered", "compiled", time.time())
            versions[number] = registered
        assert sorted(versions) == ["1", "2", "3"]
        names = [f"edge-{i}" for i in range(LIVE)] + [JOINER, DEAD]
        envs = {}
        for i, device_id in enumerate(names):
            save_credentials(root / device_id, enroll_device(plane, device_id))
            site = {JOINER: "annex", DEAD: "attic"}.get(device_id, "lab")
            services.devices.set_labels(device_id, {"site": site}, "test-operator")
            services.devices.report(device_id, profile_id=PROFILE)
            envs[device_id] = _agent_env(plane, device_id, mqtt=i >= LIVE // 2)

        def start(device_id: str) -> tuple[str, AgentProcess]:
            return device_id, AgentProcess(root / device_id, keys.public, envs[device_id])

        with ThreadPoolExecutor(4) as pool:
            agents.update(pool.map(start, [n for n in names if n != DEAD]))
        _, operator = TokenService(repos, AuditService(repos.audit)).create(
            "ci", "operator", Principal("test", "admin")
        )
        client = ApiClient(f"http://127.0.0.1:{plane.http_port}", operator)
        traffic = Traffic(agents, np.asarray(digits_mlp.x_validation))
        yield Fleet(plane, client, versions, agents, traffic)
    finally:
        if traffic is not None:
            traffic.stop()
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda a: a.stop(), agents.values()))
        plane.stop()


def test_a_device_that_never_answers_times_out_after_its_retry(fleet: Fleet) -> None:
    rollout_id = fleet.create(
        "1", {"site": "attic"}, device_timeout_s=2, retries=1, on_failure="pause"
    )
    assert wait_until(lambda: fleet.phase(rollout_id) == "paused", 30), fleet.view(rollout_id)
    view = fleet.view(rollout_id)
    dead = view["devices"][DEAD]
    assert (dead["status"], dead["attempts"]) == ("timed_out", 2)
    sent = fleet.commands(rollout_id)
    assert [c.body["attempt"] for c in sorted(sent, key=lambda c: c.created_at)] == [1, 2]
    assert {c.status for c in sent} == {"pending"}  # nobody ever answered
    install = next(g for g in view["waves"][0]["gates"] if g["gate"] == "install")
    assert install["verdict"] == "fail" and install["numbers"]["timed_out"] == 1
    fleet.client.request("POST", f"/api/v1/rollouts/{rollout_id}/abort", body={"reason": "dead"})
    assert fleet.phase(rollout_id) == "aborted"


def test_version_1_completes_in_three_waves_and_reaches_a_late_joiner(fleet: Fleet) -> None:
    v1 = fleet.versions["1"].sha256
    rollout_id = fleet.create(
        "1",
        {"site": "lab"},
        waves=[{"count": 2}, {"percent": 50}, {"percent": 100}],
        dynamic_tail=True,
    )
    fleet.rollouts["1"] = rollout_id

    def waves() -> list[str]:
        return [w["status"] for w in fleet.view(rollout_id)["summary"]["waves"]]

    assert wait_until(lambda: waves()[0] == "passed", 90), fleet.view(rollout_id)
    fleet.services.devices.set_labels(JOINER, {"site": "lab"}, "test-operator")  # joins now
    assert wait_until(lambda: fleet.phase(rollout_id) == "completed", 120), _unhealthy(
        fleet.view(rollout_id)
    )
    view = fleet.view(rollout_id)
    assert waves() == ["passed", "passed", "passed"]
    devices = view["devices"]
    assert set(devices) == {f"edge-{i}" for i in range(LIVE)} | {JOINER}
    assert [sum(d["wave"] == w for d in devices.values()) for w in range(3)][0] == 2
    assert devices[JOINER]["wave"] >= 1  # joined after the canaries
    assert wait_until(
        lambda: fleet.view(rollout_id)["devices"][JOINER]["status"] == "succeeded", 60
    )
    # the gates read the agents' telemetry: requests counted at version 1 on the wave's devices
    for wave in view["waves"]:
        gates = {g["gate"]: g for g in wave["gates"]}
        assert gates["error_rate"]["verdict"] == "pass", gates
        assert gates["error_rate"]["numbers"]["requests"] >= 30
        assert gates["latency"]["numbers"]["p95_ms"] is not None
    sent = fleet.commands(rollout_id)
    assert sorted(c.device_id for c in sent) == sorted(devices)  # one deploy per device
    assert wait_until(lambda: fleet.installs(v1) == {d: 1 for d in devices}, 30)
    assert wait_until(lambda: all(fleet.running(d) == v1 for d in devices), 30)


def test_version_2_paused_holds_then_resumes_against_version_1(fleet: Fleet) -> None:
    v2 = fleet.versions["2"].sha256
    rollout_id = fleet.create("2", {"site": "lab"}, waves=[{"count": 2}, {"percent": 100}])
    fleet.rollouts["2"] = rollout_id
    paused = fleet.client.request(
        "POST", f"/api/v1/rollouts/{rollout_id}/pause", body={"reason": "look first"}
    )
    assert paused["summary"]["phase"] == "paused"
    assert wait_until(lambda: {c.status for c in fleet.commands(rollout_id)} == {"ok"}, 60)
    time.sleep(4.0)  # twice the bake, a dozen ticks: nothing more goes out while paused
    assert len(fleet.commands(rollout_id)) == 2 and fleet.phase(rollout_id) == "paused"
    fleet.client.request("POST", f"/api/v1/rollouts/{rollout_id}/resume", body={})
    assert wait_until(lambda: fleet.phase(rollout_id) == "completed", 120), _unhealthy(
        fleet.view(rollout_id)
    )
    view = fleet.view(rollout_id)
    devices = view["devices"]
    assert len(devices) == LIVE + 1 and {d["status"] for d in devices.values()} == {"succeeded"}
    canary = {g["gate"]: g for g in view["waves"][0]["gates"]}
    # judged against version 1 on the same devices (their traffic before and around the switch)
    assert canary["error_rate"]["numbers"]["baseline_error_rate"] is not None, canary
    assert canary["latency"]["numbers"]["baseline_p95_ms"] is not None, canary
    assert wait_until(lambda: fleet.installs(v2) == {d: 1 for d in devices}, 30)
    assert wait_until(lambda: all(fleet.running(d) == v2 for d in devices), 30)
    for device in devices.values():
        assert device["rollback"] is None and not device["reverted"]


def test_a_bad_version_trips_the_error_rate_gate_in_wave_0_and_only_the_canaries_roll_back(
    fleet: Fleet,
) -> None:
    v2, v3 = fleet.versions["2"].sha256, fleet.versions["3"].sha256
    rollout_id = fleet.create(
        "3",
        {"site": "lab"},
        waves=[{"count": 2}, {"percent": 100}],
        on_failure="abort-and-rollback-wave",
    )
    assert wait_until(lambda: fleet.phase(rollout_id) == "aborted", 120), fleet.view(rollout_id)
    view = fleet.view(rollout_id)
    wave0, wave1 = view["waves"]
    gates = {g["gate"]: g for g in wave0["gates"]}
    assert wave0["status"] == "failed" and gates["error_rate"]["verdict"] == "fail", gates
    numbers = gates["error_rate"]["numbers"]
    assert numbers["requests"] >= 30 and numbers["error_rate"] > numbers["limit"]
    assert gates["install"]["numbers"]["self_test_failed"] == 0  # its self-test passed
    assert wave1["status"] == "pending"
    canaries = sorted(d for d, s in view["devices"].items() if s["wave"] == 0)
    assert len(canaries) == 2
    # the rest of the fleet never got version 3
    assert sorted(c.device_id for c in fleet.commands(rollout_id)) == canaries
    assert set(fleet.installs(v3)) == set(canaries)
    # the canaries were sent back and said so; the engine records their acks
    rollbacks = fleet.commands(rollout_id, "rollback")
    assert sorted(c.device_id for c in rollbacks) == canaries

    def outcomes() -> list[str | None]:
        devices = fleet.view(rollout_id)["devices"]
        return [devices[d]["rollback"] for d in canaries]

    assert wait_until(lambda: outcomes() == ["done", "done"], 60), fleet.view(rollout_id)
    counts = fleet.view(rollout_id)["summary"]["waves"][0]["devices"]
    assert (counts["rolled_back"], counts["rollback_done"]) == (2, 2)
    # every device runs version 2 again, by its own report
    assert wait_until(lambda: all(fleet.running(d) == v2 for d in view["devices"]), 30)
    slots = [fleet.services.repos.devices.get(d).slots[MODEL] for d in canaries]
    assert [(s["event"], s["cause"], s["model_version"]) for s in slots] == [
        ("rolled_back", "command", "2")
    ] * 2
    actions = {
        e.action
        for e in fleet.services.repos.audit.list(subject=f"rollout:{rollout_id}", limit=1000).items
    }
    assert {
        "rollout.wave_failed",
        "rollout.rolled_back",
        "rollout.device_rollback_acked",
    } <= actions


def test_an_agents_own_health_watch_rollback_fails_its_device_in_the_rollout(
    fleet: Fleet, tmp_path: Path, keys: Any, digits_mlp: Any
) -> None:
    """One more device whose agent keeps its health watch as shipped (20 requests): version 3
    breaks its traffic, the agent rolls itself back, and the engine counts that device failed
    with the agent's reason — the fleet's telemetry gates are off here, so nothing else could."""
    device_id = "edge-watch"
    save_credentials(tmp_path / device_id, enroll_device(fleet.plane, device_id))
    fleet.services.devices.set_labels(device_id, {"site": "watch"}, "test-operator")
    fleet.services.devices.report(device_id, profile_id=PROFILE)
    env = _agent_env(fleet.plane, device_id, mqtt=True)
    del env["FLEETCAST_AGENT_HEALTH_MIN_REQUESTS"]
    agent = AgentProcess(tmp_path / device_id, keys.public, env)
    traffic = Traffic({device_id: agent}, np.asarray(digits_mlp.x_validation))
    try:
        quick = {"error_rate": {"enabled": False}, "latency": {"enabled": False}}
        first = fleet.create("2", {"site": "watch"}, bake_s=1, gates=quick)
        assert wait_until(lambda: fleet.phase(first) == "completed", 60), fleet.view(first)
        v2, v3 = fleet.versions["2"].sha256, fleet.versions["3"].sha256
        assert wait_until(lambda: fleet.running(device_id) == v2, 30)  # what it goes back to
        rollout_id = fleet.create("3", {"site": "watch"}, bake_s=60, gates=quick)
        assert wait_until(lambda: fleet.phase(rollout_id) == "aborted", 90), fleet.view(rollout_id)
        view = fleet.view(rollout_id)
        state = view["devices"][device_id]
        assert (state["status"], state["reverted"]) == ("failed", True)
        assert state["reason"].startswith("health watch rolled it back: error rate")
        install = next(g for g in view["waves"][0]["gates"] if g["gate"] == "install")
        assert install["verdict"] == "fail" and install["numbers"]["failed"] == 1
        assert fleet.commands(rollout_id, "rollback") == []  # it went back by itself
        assert fleet.running(device_id) == v2
        assert fleet.installs(v3).get(device_id) == 1
    finally:
        traffic.stop()
        agent.stop()
