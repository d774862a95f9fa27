"""Package delivery and telemetry ingest over gRPC and MQTT, beside plain HTTP.

One run: the control plane is `fleetcast serve --mqtt` in its own process (an
embedded mosquitto beside it); 1, 10 and 100 device clients in this process
(threads, each with its own transport connection) receive a deploy command,
download a real signed package of about 1 MB and 20 MB, verify it (sha256 +
ed25519, as `edge_agent.package.open_package` does on a device), write it to
disk and ack. Reported: time from the deploy command to the last ack
(time-to-all-installed) and aggregate throughput. The baseline is a plain HTTP
GET of the same bytes from Python's threaded HTTP server, verified the same way.
Telemetry: 100 devices upload real telemetry windows (from the digits MLP's
ModelTelemetry) in batches of 10; windows per second until all are acked.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from control_plane.server import ServeProcess

logger = logging.getLogger(__name__)

AGENT_COUNTS = (1, 10, 100)
WINDOWS_PER_DEVICE = 50
TELEMETRY_BATCH = 10
PROFILE = """
id = "bench-fp32"
description = "transport benchmark: fp32 ONNX only"
[target]
os = "linux"
arch = "x86_64"
[runtime]
name = "onnxruntime"
threads = 1
[compile]
candidates = [{ format = "onnx", recipe = "fp32" }]
[budgets]
max_package_bytes = 1_000_000_000
max_memory_bytes = 4_000_000_000
[benchmark]
on_host = false
"""


def _build_package(work: Path, hidden: int, name: str) -> Path:
    """A real signed package whose fp32 MLP weighs about ``64*hidden + hidden*hidden`` floats."""
    import torch
    from torch import nn

    from control_plane.compiler.pipeline import CompileRequest, compile_model
    from control_plane.core.hardware import load_profile

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(64, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, 10),
    ).eval()
    source = work / f"{name}.onnx"
    torch.onnx.export(
        model,
        (torch.zeros(2, 64),),
        str(source),
        input_names=["input"],
        output_names=["output"],
        dynamo=True,
        dynamic_shapes=({0: torch.export.Dim("batch")},),
    )
    rng = np.random.default_rng(0)
    np.savez(work / "cal.npz", input=rng.random((64, 64), dtype=np.float32))
    np.savez(work / "val.npz", input=rng.random((64, 64), dtype=np.float32))
    profile_path = work / "profiles" / "bench-fp32.toml"
    profile_path.parent.mkdir(exist_ok=True)
    profile_path.write_text(PROFILE)
    (outcome,) = compile_model(
        CompileRequest(
            model=source,
            calibration=work / "cal.npz",
            validation=work / "val.npz",
            profiles=[load_profile(profile_path)],
            out_dir=work / "packages",
            signing_key=work / "data" / "keys" / "fleetcast.key",
            model_name=name,
            model_version="1",
        )
    )
    assert outcome.path is not None
    return outcome.path


def _verify(data: bytes, public_key: Any, directory: Path) -> None:
    from edge_agent.package import open_package

    package = open_package(data, public_key)
    (directory / f"{package.sha256}.fcpkg").write_bytes(data)


def _deliver(
    transports: list[Any], fleet: Any, sha: str, public_key: Any, dirs: list[Path]
) -> tuple[float, float]:
    """Deploy to every device: (seconds until the last one verified, stored and acked,
    median seconds from the deploy command to the device receiving it)."""
    received: list[float] = []

    def device(i: int) -> None:
        transport = transports[i]
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            for command in transport.poll_commands(0.5):
                if command.body.get("sha256") == sha:
                    received.append(time.perf_counter() - start)
                    _verify(transport.fetch_package(sha), public_key, dirs[i])
                    transport.ack(command, True)
                    return
        raise TimeoutError("no deploy command")

    start = time.perf_counter()
    records = [
        fleet.commands.send(f"bench-{i}", "deploy", {"sha256": sha}, "bench")
        for i in range(len(transports))
    ]
    with ThreadPoolExecutor(len(transports)) as pool:
        list(pool.map(device, range(len(transports))))
    while any(fleet.commands.get(r.id).status == "pending" for r in records):
        time.sleep(0.01)
    return time.perf_counter() - start, float(np.median(received))


def _http(url: str, count: int, public_key: Any, dirs: list[Path]) -> float:
    def get(i: int) -> None:
        with urllib.request.urlopen(url, timeout=300) as response:
            _verify(response.read(), public_key, dirs[i])

    start = time.perf_counter()
    with ThreadPoolExecutor(count) as pool:
        list(pool.map(get, range(count)))
    return time.perf_counter() - start


def _window(work: Path, package: Path) -> dict[str, Any]:
    """A real telemetry window of the benchmark MLP after 200 predictions."""
    from edge_agent.runtime import open_model

    model = open_model(package, (work / "data" / "keys" / "fleetcast.pub").read_bytes())
    for row in np.random.default_rng(1).random((200, 64), dtype=np.float32):
        model.predict({"input": row[None]})
    assert model.telemetry is not None
    return model.telemetry.close_window("bench-0", 1)


def _telemetry(transports: list[Any], window: dict[str, Any]) -> tuple[float, int]:
    from edge_agent.outbox import OutboxMessage

    def device(i: int) -> None:
        seq = 1
        while seq <= WINDOWS_PER_DEVICE:
            batch = []
            for _ in range(TELEMETRY_BATCH):
                body = {**window, "device_id": f"bench-{i}", "sequence": seq}
                batch.append(OutboxMessage(seq, "telemetry_window", body, 1))
                seq += 1
            acked = transports[i].send(batch)
            assert sorted(acked) == [m.id for m in batch], acked

    start = time.perf_counter()
    with ThreadPoolExecutor(len(transports)) as pool:
        list(pool.map(device, range(len(transports))))
    return time.perf_counter() - start, len(transports) * WINDOWS_PER_DEVICE


def run(results_dir: Path) -> str:
    from control_plane.app import build_services
    from control_plane.settings import Settings
    from control_plane.signing import generate_keypair
    from edge_agent.package import load_public_key
    from edge_agent.transport.grpc import enroll

    work = Path(tempfile.mkdtemp(prefix="fleetcast-bench-transport-"))
    rows: list[dict[str, Any]] = []
    try:
        generate_keypair(work / "data" / "keys")
        public_key = load_public_key(work / "data" / "keys" / "fleetcast.pub")
        packages = {
            "1 MB": _build_package(work, 480, "bench-1mb"),
            "20 MB": _build_package(work, 2200, "bench-20mb"),
        }
        server = ServeProcess(work / "data")
        http = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "http.server",
                "0",
                "--bind",
                "127.0.0.1",
                "--directory",
                str(work / "packages"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # its access log
            text=True,
        )
        assert http.stdout is not None
        http_port = int(re.findall(r"port (\d+)", http.stdout.readline())[0])
        try:
            fleet = build_services(Settings(data_dir=work / "data"))  # the server's store
            shas = {
                label: fleet.packages.register(path, "bench").sha256
                for label, path in packages.items()
            }
            target = f"127.0.0.1:{server.grpc_port}"
            creds = [
                enroll(
                    target,
                    fleet.enrollment.create_token("bench", f"bench-{i}"),
                    f"bench-{i}",
                    {"os": "linux"},
                )
                for i in range(max(AGENT_COUNTS))
            ]
            for transport_name in ("grpc", "mqtt"):
                for count in AGENT_COUNTS:
                    dirs = [
                        work / "devices" / f"{transport_name}-{count}-{i}" for i in range(count)
                    ]
                    for d in dirs:
                        d.mkdir(parents=True)
                    transports = _connect(transport_name, creds[:count], target, server, dirs)
                    try:
                        for label, sha in shas.items():
                            size = packages[label].stat().st_size
                            seconds, latency = _deliver(transports, fleet, sha, public_key, dirs)
                            row = _row(transport_name, label, size, count, seconds)
                            rows.append({**row, "command_latency_s": round(latency, 3)})
                            if transport_name == "grpc":  # the HTTP baseline once per size/count
                                url = f"http://127.0.0.1:{http_port}/{packages[label].name}"
                                rows.append(
                                    _row(
                                        "http",
                                        label,
                                        size,
                                        count,
                                        _http(url, count, public_key, dirs),
                                    )
                                )
                        if count == max(AGENT_COUNTS):
                            window = _window(work, packages["1 MB"])
                            seconds, windows = _telemetry(transports, window)
                            rows.append(
                                {
                                    "what": "telemetry",
                                    "transport": transport_name,
                                    "agents": count,
                                    "windows": windows,
                                    "window_bytes": len(json.dumps(window)),
                                    "seconds": round(seconds, 3),
                                    "windows_per_s": round(windows / seconds, 1),
                                }
                            )
                    finally:
                        for t in transports:
                            t.close()
                        for d in dirs:
                            shutil.rmtree(d, ignore_errors=True)
        finally:
            http.terminate()
            server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return _write(results_dir, rows)


def _connect(
    kind: str, creds: list[dict[str, str]], target: str, server: ServeProcess, dirs: list[Path]
) -> list[Any]:
    from edge_agent.transport.grpc import GrpcTransport
    from edge_agent.transport.mqtt import MqttTransport

    if kind == "grpc":
        transports = [
            GrpcTransport(target, c["device_token"], d / "dl")
            for c, d in zip(creds, dirs, strict=True)
        ]
        ready: Callable[[Any], bool] = lambda t: True  # noqa: E731 - the stream connects lazily
    else:
        transports = [
            MqttTransport(
                "127.0.0.1", server.mqtt_port, c["device_id"], c["mqtt_password"], d / "dl"
            )
            for c, d in zip(creds, dirs, strict=True)
        ]
        ready = lambda t: bool(t.connected.wait(30))  # noqa: E731
    assert all(ready(t) for t in transports)
    return transports


def _row(transport: str, label: str, size: int, count: int, seconds: float) -> dict[str, Any]:
    return {
        "what": "delivery",
        "transport": transport,
        "package": label,
        "bytes": size,
        "agents": count,
        "seconds": round(seconds, 3),
        "mb_per_s": round(size * count / seconds / 1e6, 1),
    }


def _write(results_dir: Path, rows: list[dict[str, Any]]) -> str:
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "transport.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = [
        "## Transports: package delivery (time to all installed) and telemetry ingest",
        "",
        "| package | agents | gRPC s | MQTT s | HTTP s | gRPC MB/s | MQTT MB/s | HTTP MB/s "
        "| command latency gRPC / MQTT (s) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    delivery = {
        (r["transport"], r["package"], r["agents"]): r for r in rows if r["what"] == "delivery"
    }
    for label in ("1 MB", "20 MB"):
        for count in AGENT_COUNTS:
            cells = [delivery.get((t, label, count)) for t in ("grpc", "mqtt", "http")]
            secs = [f"{c['seconds']:.2f}" if c else "-" for c in cells]
            rates = [f"{c['mb_per_s']:.0f}" if c else "-" for c in cells]
            latency = " / ".join(f"{c['command_latency_s']:.2f}" if c else "-" for c in cells[:2])
            lines.append(f"| {label} | {count} | " + " | ".join([*secs, *rates, latency]) + " |")
    lines += [
        "",
        "| telemetry | agents | windows | window bytes | seconds | windows/s |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if r["what"] == "telemetry":
            lines.append(
                f"| {r['transport']} | {r['agents']} | {r['windows']} | "
                f"{r['window_bytes']} | {r['seconds']} | {r['windows_per_s']} |"
            )
    lines += [
        "",
        "Command: `make bench` (or `.venv/bin/python -m benchmarks transport`). "
        "Time-to-all-installed runs from the deploy command to the last ack; each device "
        "verifies hash and signature and writes the package before acking. Command latency: "
        "median time from the deploy command (written to the store by another process, as the "
        "CLI does; the server notices other processes' commits within 50 ms) to the device "
        "receiving it. The "
        "HTTP baseline is a plain GET of the same file with no command step. Clients and the "
        "control plane share this 2-core host.",
    ]
    markdown = "\n".join(lines) + "\n"
    (results_dir / "transport.md").write_text(markdown)
    return markdown
