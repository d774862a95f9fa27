"""A staged rollout over a simulated fleet of 100, 300 and 1,000 devices (issue #10).

Per fleet size, from scratch: `fleetcast serve --mqtt` (its own process, with its
embedded mosquitto) on a fresh SQLite store; a real signed package of the digits
MLP in its catalog; one-time enrollment tokens minted in bulk (the code path of
`fleetcast devices token --count`); the devices split over 4 worker processes
(:mod:`benchmarks.fleet_sim`, half of them on MQTT and half on gRPC), each
enrolling over gRPC and then speaking the agent's own transport clients. The
rollout is created through the REST API: 4 waves (1%, 10%, 50%, 100%), a 2 s bake,
the telemetry gates off (the simulated devices serve no traffic), the default
disruption budget (50 devices installing at once) and the default 2 s ticker.

Measured: wall time from the POST to the rollout's ``completed`` phase, devices
per minute over it, and the control plane's CPU seconds (serve plus its mosquitto
child, user + system, from psutil) and peak RSS while it runs; enrollment time
too. Checked: every device installed the package exactly once, and no wave's
first deploy was sent before the previous wave's last ack.

``python -m benchmarks fleet --devices 100,300`` runs a subset.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import markdown_table, tool_versions, write_results

logger = logging.getLogger(__name__)

SIZES = (100, 300, 1000)
PROCESSES = 4
BAKE_S = 2.0
WAVES = [{"percent": 1}, {"percent": 10}, {"percent": 50}, {"percent": 100}]
GRPC_WORKERS = 1024  # one per connected gRPC agent (its command stream) and a quarter more
GREENGRASS_PER_MIN = 1000  # AWS IoT Greengrass: "up to 1,000 devices a minute" (see docs)
SAMPLE_S = 0.25
TIMEOUT_S = 1800.0


@dataclass
class Usage:
    """CPU seconds and peak RSS of a process tree (serve and its mosquitto), sampled."""

    pid: int
    cpu: dict[int, float] = field(default_factory=dict)  # pid -> last user + system seconds
    peak_rss: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self) -> float:
        """Total CPU seconds so far of the tree; updates the peak RSS."""
        import psutil

        root = psutil.Process(self.pid)
        rss = 0
        for proc in [root, *root.children(recursive=True)]:
            try:
                times = proc.cpu_times()
                self.cpu[proc.pid] = times.user + times.system
                rss += proc.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        self.peak_rss = max(self.peak_rss, rss)
        return sum(self.cpu.values())

    def start(self) -> Usage:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self.sample()

    def stop(self) -> float:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        return self.sample()


def _prepare_package(work: Path) -> Path:
    """The digits MLP, trained and compiled for x86-64-generic, signed with the run's key."""
    import torch

    from control_plane.compiler.pipeline import CompileRequest, compile_model
    from control_plane.core.hardware import load_profile
    from control_plane.examples import digits

    split = digits.load_split()
    torch.manual_seed(0)
    module = digits.train(digits.mlp(), split.x_train, split.y_train)
    data = digits.write_dataset(work / "digits", split, images=False)
    torch.save(module.state_dict(), work / "digits" / "model.pt")
    root = Path(__file__).resolve().parent.parent
    (outcome,) = compile_model(
        CompileRequest(
            model=work / "digits" / "model.pt",
            factory="control_plane.examples.digits:mlp",
            calibration=data["calibration"],
            validation=data["validation"],
            labels=data["labels"],
            profiles=[load_profile(root / "hardware-profiles" / "x86-64-generic.toml")],
            out_dir=work / "packages",
            signing_key=work / "keys" / "fleetcast.key",
            model_name="digits",
            model_version="1",
        )
    )
    assert outcome.path is not None
    return Path(outcome.path)


def _mint_tokens(services: Any, count: int, tag: str) -> tuple[list[tuple[str, str]], float]:
    """(device id, token) pairs, as `fleetcast devices token --count` mints them; seconds."""
    started = time.perf_counter()
    ids = [f"sim-{tag}-{i:04d}" for i in range(count)]
    tokens = services.enrollment.create_tokens("bench", ids)
    return list(zip(ids, tokens, strict=True)), time.perf_counter() - started


def run_size(work: Path, package: Path, count: int) -> dict[str, Any]:
    """One fleet size from a fresh store; the row of the results table."""
    from benchmarks.fleet_sim import DeviceSpec, SimFleet
    from control_plane.api.client import ApiClient
    from control_plane.app import build_services
    from control_plane.server import ServeProcess
    from control_plane.services.audit import AuditService
    from control_plane.services.tokens import Principal, TokenService
    from control_plane.settings import Settings
    from control_plane.store.records import ModelCard

    data = work / f"data-{count}"
    shutil.copytree(work / "keys", data / "keys")
    server = ServeProcess(data, "--grpc-workers", str(GRPC_WORKERS))
    fleet: SimFleet | None = None
    services = build_services(Settings(data_dir=data))  # the server's store, as the CLI opens it
    try:
        registered = services.packages.register(package, "bench")
        repos, now = services.repos, time.time()
        repos.models.add("digits", "digits", "bench", now)
        repos.versions.add("digits", "1", ModelCard("digits", "sklearn digits", "bench"), None, now)
        repos.versions.set_stage("digits", "1", "registered", "compiled", now)
        _, operator = TokenService(repos, AuditService(repos.audit)).create(
            "bench", "operator", Principal("bench", "admin")
        )
        minted, mint_s = _mint_tokens(services, count, str(count))
        specs = [
            DeviceSpec(device_id, "mqtt" if i % 2 else "grpc", token)
            for i, (device_id, token) in enumerate(minted)
        ]
        fleet = SimFleet(
            specs,
            grpc_target=f"127.0.0.1:{server.grpc_port}",
            mqtt_port=server.mqtt_port,
            public_key=work / "keys" / "fleetcast.pub",
            workdir=work / f"fleet-{count}",
            processes=PROCESSES,
        )
        started = time.perf_counter()
        fleet.wait_ready()
        ready_s = time.perf_counter() - started
        for spec in specs:  # what operators label and the hardware report says
            services.devices.set_labels(spec.device_id, {"fleet": "sim"}, "bench")
            services.devices.report(spec.device_id, profile_id=registered.profile_id)
        client = ApiClient(f"http://127.0.0.1:{server.http_port}", operator, timeout=120)
        spec_body = {
            "model": "digits",
            "version": "1",
            "target": {"kind": "devices", "selector": {"fleet": "sim"}},
            "waves": WAVES,
            "bake_s": BAKE_S,
            "device_timeout_s": 300,
            "min_finished": 1,
            "gates": {"error_rate": {"enabled": False}, "latency": {"enabled": False}},
        }
        time.sleep(2 * SAMPLE_S)
        usage = Usage(server.proc.pid)
        cpu_before = usage.sample()
        usage.peak_rss = 0
        usage.start()
        started = time.perf_counter()
        rollout_id = client.request("POST", "/api/v1/rollouts", body=spec_body)["summary"]["id"]
        logger.info("rollout %s created over %d devices", rollout_id, count)
        view = _wait_settled(client, rollout_id)
        seconds = time.perf_counter() - started
        cpu = usage.stop() - cpu_before
        devices = fleet.stop()
        checks = _check(services, rollout_id, view, devices, registered.sha256, count)
        row = {
            "devices": count,
            "transports": "half MQTT, half gRPC",
            "processes": PROCESSES,
            "phase": view["summary"]["phase"],
            "seconds": round(seconds, 2),
            "devices_per_min": round(count / seconds * 60, 1),
            "cp_cpu_s": round(cpu, 2),
            "cp_cpu_share": round(cpu / seconds, 3),
            "cp_peak_rss_mb": round(usage.peak_rss / 2**20, 1),
            "mint_tokens_s": round(mint_s, 3),
            "enroll_connect_s": round(ready_s, 2),
            "waves": _wave_times(view),
            **checks,
        }
        logger.info("fleet of %d: %s", count, json.dumps(row))
        return row
    finally:
        if fleet is not None:
            fleet.kill()
        services.close()
        server.stop()
        shutil.rmtree(data, ignore_errors=True)


def _wait_settled(client: Any, rollout_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        view: dict[str, Any] = client.request("GET", f"/api/v1/rollouts/{rollout_id}")
        if view["summary"]["phase"] not in ("running",) or time.monotonic() > deadline:
            return view
        time.sleep(1.0)  # an operator's `rollouts watch` polls about as often


def _wave_times(view: dict[str, Any]) -> list[dict[str, Any]]:
    waves = []
    for wave, summary in zip(view["waves"], view["summary"]["waves"], strict=True):
        members = sum(v for k, v in summary["devices"].items() if k not in ("rolled_back",))
        started, finished = wave.get("started_at"), wave.get("finished_at")
        waves.append(
            {
                "index": wave["index"],
                "devices": members,
                "status": wave["status"],
                "seconds": round(finished - started, 2) if started and finished else None,
            }
        )
    return waves


def _check(
    services: Any,
    rollout_id: str,
    view: dict[str, Any],
    devices: dict[str, Any],
    sha256: str,
    count: int,
) -> dict[str, Any]:
    """Exactly one install per device, one deploy command each, and waves in order."""
    installs = [len(d["installs"]) for d in devices.values()]
    right = all(i["sha256"] == sha256 for d in devices.values() for i in d["installs"])
    commands: list[Any] = []
    offset: int | None = 0
    while offset is not None:
        page = services.commands.list(kind="deploy", limit=1000, offset=offset)
        commands += [c for c in page.items if c.body.get("rollout") == rollout_id]
        offset = page.next_offset
    wave_of = {d: s["wave"] for d, s in view["devices"].items()}
    ordered = True
    for index in range(1, len(WAVES)):
        earlier = [c.acked_at or 0.0 for c in commands if wave_of.get(c.device_id) == index - 1]
        later = [c.created_at for c in commands if wave_of.get(c.device_id) == index]
        if earlier and later and min(later) < max(earlier):
            ordered = False
    latency = sorted((c.acked_at or 0.0) - c.created_at for c in commands if c.acked_at)
    per_device: dict[str, int] = {}
    for command in commands:
        per_device[command.device_id] = per_device.get(command.device_id, 0) + 1
    return {
        "devices_reporting": len(devices),
        "one_install_each": len(devices) == count and installs == [1] * count and right,
        "one_deploy_each": sorted(per_device.values()) == [1] * count,
        "waves_in_order": ordered,
        # deploy command written -> its ack stored: delivery, download, verify, ack
        "ack_p50_s": round(latency[len(latency) // 2], 3) if latency else None,
        "ack_p95_s": round(latency[int(len(latency) * 0.95)], 3) if latency else None,
    }


def _busiest_wave_rate(row: dict[str, Any]) -> float:
    """Devices a minute in the largest wave (its deploys to its last ack and bake)."""
    wave = max(row["waves"], key=lambda w: w["devices"])
    return float(wave["devices"] / wave["seconds"] * 60) if wave["seconds"] else 0.0


def _markdown(rows: Sequence[dict[str, Any]], host: dict[str, Any]) -> str:
    headers = [
        "devices", "phase", "rollout s", "devices/min", "largest wave devices/min",
        "Greengrass devices/min", "control-plane CPU s", "CPU share", "peak RSS MB",
        "wave s (1%/10%/50%/100%)", "deploy to ack p50 / p95 s", "mint tokens s",
        "enroll + connect s", "one install each", "waves in order",
    ]  # fmt: skip
    table = [
        [
            r["devices"],
            r["phase"],
            r["seconds"],
            f"{r['devices_per_min']:,.0f}",
            f"{_busiest_wave_rate(r):,.0f}",
            f"up to {GREENGRASS_PER_MIN:,}",
            r["cp_cpu_s"],
            f"{r['cp_cpu_share']:.0%}",
            r["cp_peak_rss_mb"],
            " / ".join(str(w["seconds"]) for w in r["waves"]),
            f"{r['ack_p50_s']} / {r['ack_p95_s']}",
            r["mint_tokens_s"],
            r["enroll_connect_s"],
            "yes" if r["one_install_each"] and r["one_deploy_each"] else "NO",
            "yes" if r["waves_in_order"] else "NO",
        ]
        for r in rows
    ]
    lines = [
        "## Fleet: a 4-wave rollout over a simulated fleet (issue #10)",
        "",
        markdown_table(headers, table),
        "",
        f"Host: {host['machine']}, {host['cpus']} CPUs, shared by the control plane, mosquitto "
        f"and the {PROCESSES} fleet processes (and, on the build host, other jobs). Waves "
        f"1%/10%/50%/100%, bake {BAKE_S:.0f} s, disruption budget 50 (the default), ticker "
        "every 2 s and on acks (the defaults); half the devices on MQTT, half on gRPC. "
        "Rollout s runs from the POST to `completed` (every wave's bake included); the "
        "largest wave's rate is the steady one. Control-plane CPU and RSS are "
        "`fleetcast serve` plus its mosquitto (psutil) over the same span. Deploy to ack: "
        "the command written to the store until its ack is stored (delivery, download, "
        "verification, ack). Greengrass's figure is AWS's published deployment rate (up to "
        "1,000 devices a minute), not measured here.",
        "",
        "Command: `.venv/bin/python -m benchmarks fleet` (or `--devices 100,300`).",
    ]
    return "\n".join(lines)


def run(results_dir: Path, argv: Sequence[str] = ()) -> str:
    from control_plane.signing import generate_keypair

    parser = argparse.ArgumentParser(prog="python -m benchmarks fleet")
    parser.add_argument(
        "--devices",
        default=",".join(map(str, SIZES)),
        help="fleet sizes, comma separated (default: %(default)s)",
    )
    args = parser.parse_args(list(argv))
    sizes = [int(s) for s in args.devices.split(",") if s.strip()]
    work = Path(tempfile.mkdtemp(prefix="fleetcast-bench-fleet-"))
    try:
        generate_keypair(work / "keys")
        package = _prepare_package(work)
        rows = [run_size(work, package, count) for count in sizes]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    host = {
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "versions": tool_versions(["grpcio", "paho-mqtt", "psutil", "onnxruntime"]),
    }
    markdown = _markdown(rows, host)
    write_results(
        results_dir,
        "fleet",
        markdown,
        {"host": host, "greengrass_devices_per_min": GREENGRASS_PER_MIN, "rows": rows},
    )
    return markdown
