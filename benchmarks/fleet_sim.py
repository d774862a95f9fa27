"""A simulated device fleet that speaks the real wire protocols, many devices per process.

Each :class:`SimDevice` is what a `fleetcast-agent` is to the control plane, minus the
slots and the per-device runtime: it enrolls with a one-time token over gRPC
(``Enroll``), then talks through the agent's own transport clients
(:class:`~edge_agent.transport.grpc.GrpcTransport` or
:class:`~edge_agent.transport.mqtt.MqttTransport`: the same protobuf messages,
topics, command stream, resumable block download and acks). A deploy command is
executed once per execution version, like the agent's command log does: the
package is downloaded, its sha256 and ed25519 signature are checked
(:func:`edge_agent.package.open_package`), the model is loaded into its runtime once
per *process* (not per device), the install is recorded and the command acked
with the agent's detail (package id, model, release). A redelivered command is
acked again with the first result, never installed twice.

:func:`run_worker` runs a share of the fleet in one process (a thread per device);
:class:`SimFleet` starts several such processes (``python -m benchmarks.fleet_sim``)
and collects what every device installed, so benchmarks and tests can check that
each device got exactly one install.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

HOST = {"os": "linux", "arch": "x86_64", "cpu_features": ["avx2"], "runtimes": ["onnxruntime"]}
ENROLL_THREADS = 8


@dataclass(frozen=True)
class DeviceSpec:
    """One simulated device: its id, its transport and its one-time enrollment token."""

    device_id: str
    transport: str  # "grpc" or "mqtt"
    token: str


@dataclass
class Install:
    device_id: str
    command_id: str
    execution_version: int
    sha256: str
    at: float


_runtime_lock = threading.Lock()
_loaded: dict[str, Any] = {}


def _load_once(package: Any) -> None:
    """Load the package's model into its runtime once per process (shared by its devices)."""
    from edge_agent.runtime import load_model_bytes

    with _runtime_lock:
        if package.sha256 not in _loaded:
            m = package.manifest
            _loaded[package.sha256] = load_model_bytes(
                m.runtime, package.model_bytes, m.signature, 1, m.profile.execution_providers
            )


class SimDevice:
    """A device's command handling over a real transport, without slots or its own runtime."""

    def __init__(self, device_id: str, transport: Any, public_key: Any) -> None:
        self.device_id = device_id
        self.transport = transport
        self.public_key = public_key
        self.active: str | None = None
        self.previous: str | None = None
        self.installs: list[Install] = []
        self.acks = 0
        self._done: dict[int, tuple[bool, str, dict[str, Any]]] = {}

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                commands = self.transport.poll_commands(0.5)
            except Exception:  # the transport reconnects by itself
                logger.exception("%s: polling commands", self.device_id)
                stop.wait(0.5)
                continue
            for command in commands:
                self.handle(command)

    def handle(self, command: Any) -> None:
        """Execute once per execution version; a redelivery is acked with the first result."""
        version = command.execution_version
        done = self._done.get(version) if version else None
        if done is None:
            done = self._execute(command)
            if version:
                self._done[version] = done
        ok, error, detail = done
        self.transport.ack(command, ok, error, detail)
        self.acks += 1

    def _execute(self, command: Any) -> tuple[bool, str, dict[str, Any]]:
        from edge_agent.errors import EdgeError
        from edge_agent.package import open_package

        if command.type == "rollback":
            self.active, self.previous = self.previous, self.active
            return True, "", {"kind": "rollback"}
        if command.type != "deploy":
            return True, "", {"kind": command.type}
        sha256 = str(command.body.get("sha256", ""))
        if sha256 and sha256 == self.active:
            return True, "", {"note": "already active"}
        try:
            package = open_package(self.transport.fetch_package(sha256), self.public_key)
            _load_once(package)
        except EdgeError as exc:
            logger.warning("%s: deploy %s failed: %s", self.device_id, command.id, exc)
            return False, str(exc), {"step": "download"}
        self.previous, self.active = self.active, sha256
        self.installs.append(
            Install(self.device_id, command.id, command.execution_version, sha256, time.time())
        )
        m = package.manifest
        detail = {"package_id": m.package_id, "model_name": m.model_name, "release": m.release}
        return True, "", detail


def _enroll(target: str, spec: DeviceSpec) -> dict[str, str]:
    from edge_agent.transport.grpc import enroll

    return enroll(target, spec.token, spec.device_id, HOST)


def _connect(
    spec: DeviceSpec, creds: dict[str, str], grpc_target: str, mqtt_port: int, state: Path
) -> Any:
    from edge_agent.transport.grpc import GrpcTransport
    from edge_agent.transport.mqtt import MqttTransport

    download = state / spec.device_id
    if spec.transport == "grpc":
        return GrpcTransport(grpc_target, creds["device_token"], download)
    return MqttTransport("127.0.0.1", mqtt_port, spec.device_id, creds["mqtt_password"], download)


@dataclass
class Worker:
    """A share of the fleet running in this process."""

    devices: list[SimDevice] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    enroll_seconds: float = 0.0
    connect_seconds: float = 0.0

    def start(
        self,
        specs: Sequence[DeviceSpec],
        grpc_target: str,
        mqtt_port: int,
        public_key: Any,
        state: Path,
    ) -> Worker:
        """Enroll every device (gRPC ``Enroll``), connect its transport, start its thread."""
        started = time.perf_counter()
        with ThreadPoolExecutor(ENROLL_THREADS) as pool:
            creds = list(pool.map(lambda s: _enroll(grpc_target, s), specs))
        self.enroll_seconds = time.perf_counter() - started
        started = time.perf_counter()
        for spec, cred in zip(specs, creds, strict=True):
            transport = _connect(spec, cred, grpc_target, mqtt_port, state)
            self.devices.append(SimDevice(spec.device_id, transport, public_key))
        for spec, device in zip(specs, self.devices, strict=True):
            # MQTT: until the broker accepted the login (gRPC's stream opens on its own)
            if spec.transport == "mqtt" and not device.transport.connected.wait(120):
                raise TimeoutError(f"{device.device_id}: no MQTT connection within 120 s")
        self.connect_seconds = time.perf_counter() - started
        for device in self.devices:
            thread = threading.Thread(target=device.run, args=(self.stop,), daemon=True)
            thread.start()
            self.threads.append(thread)
        return self

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(5)
        for device in self.devices:
            try:
                device.transport.close()
            except Exception:  # closing is best effort at the end of a run
                logger.debug("closing %s", device.device_id, exc_info=True)

    def report(self) -> dict[str, Any]:
        return {
            "enroll_seconds": self.enroll_seconds,
            "connect_seconds": self.connect_seconds,
            "devices": {
                d.device_id: {
                    "installs": [vars(i) for i in d.installs],
                    "acks": d.acks,
                    "active": d.active,
                }
                for d in self.devices
            },
        }


def run_worker(config_path: Path) -> int:
    """``python -m benchmarks.fleet_sim CONFIG``: run a share of the fleet until stdin closes.

    Prints ``ready <enroll s> <connect s>`` once every device is enrolled and connected,
    and writes the report (:meth:`Worker.report`) to the config's ``report`` path at the end.
    """
    from edge_agent.package import load_public_key

    config = json.loads(config_path.read_text())
    specs = [DeviceSpec(**d) for d in config["devices"]]
    state = Path(config["state"])
    worker = Worker().start(
        specs,
        config["grpc_target"],
        int(config["mqtt_port"]),
        load_public_key(Path(config["public_key"])),
        state,
    )
    print(f"ready {worker.enroll_seconds:.3f} {worker.connect_seconds:.3f}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.stdin.close())
    try:
        sys.stdin.read()  # the parent closes our stdin to stop us
    except (ValueError, OSError):
        pass
    worker.close()
    Path(config["report"]).write_text(json.dumps(worker.report()))
    return 0


class SimFleet:
    """The fleet split over ``processes`` worker processes (round-robin)."""

    def __init__(
        self,
        specs: Sequence[DeviceSpec],
        *,
        grpc_target: str,
        mqtt_port: int,
        public_key: Path,
        workdir: Path,
        processes: int = 4,
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.procs: list[subprocess.Popen[str]] = []
        self.reports: list[Path] = []
        self.enroll_seconds = 0.0
        self.connect_seconds = 0.0
        shares = [list(specs[i::processes]) for i in range(processes)]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        for index, share in enumerate(s for s in shares if s):
            config = workdir / f"worker-{index}.json"
            report = workdir / f"worker-{index}.report.json"
            config.write_text(
                json.dumps(
                    {
                        "devices": [vars(s) for s in share],
                        "grpc_target": grpc_target,
                        "mqtt_port": mqtt_port,
                        "public_key": str(public_key),
                        "state": str(workdir / f"state-{index}"),
                        "report": str(report),
                    }
                )
            )
            self.reports.append(report)
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "benchmarks.fleet_sim", str(config)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    env=env,
                )
            )

    def wait_ready(self, timeout: float = 600.0) -> None:
        """Until every worker enrolled and connected its devices (their slowest times kept)."""
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line.startswith("ready"):
                raise RuntimeError(f"fleet worker {proc.pid} did not start (exit {proc.poll()})")
            _, enroll_s, connect_s = line.split()
            self.enroll_seconds = max(self.enroll_seconds, float(enroll_s))
            self.connect_seconds = max(self.connect_seconds, float(connect_s))
            if time.monotonic() > deadline:
                raise TimeoutError("fleet workers did not get ready in time")

    def stop(self) -> dict[str, Any]:
        """Stop the workers; every device's installs and acks, by device id."""
        devices: dict[str, Any] = {}
        for proc in self.procs:
            if proc.stdin is not None:
                proc.stdin.close()
        for proc in self.procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        for report in self.reports:
            if report.exists():
                devices.update(json.loads(report.read_text())["devices"])
        return devices

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        shutil.rmtree(self.workdir, ignore_errors=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    sys.exit(run_worker(Path(sys.argv[1])))
