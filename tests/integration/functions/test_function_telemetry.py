"""Telemetry from function containers reaches a running control plane: counts equal
invocations, also when a frozen (SIGSTOP) container is killed and a new one takes over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from control_plane.server import ControlPlane, ServeOptions
from edge_agent.transport.grpc import enroll

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]
DEVICE = "fn-digits"
HOST = {"os": "linux", "arch": "x86_64", "cpu_features": [], "runtimes": ["onnxruntime"]}


@pytest.fixture()
def plane(tmp_path: Path, keys: Any) -> Iterator[ControlPlane]:
    cp = ControlPlane(
        ServeOptions(data_dir=tmp_path / "cp", public_key=keys.public, grpc_address="127.0.0.1:0")
    ).start()
    try:
        yield cp
    finally:
        cp.stop()


class Container:
    """The handler in its own process, fed invocations one by one."""

    started: list[Container] = []

    def __init__(self, env: dict[str, str]) -> None:
        Container.started.append(self)
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("lambda_loop.py"))],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._line() == {"ready": True}

    def _line(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"handler process exited ({self.proc.poll()})"
        return dict(json.loads(line))

    def invoke(self, event: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(event) + "\n")
        self.proc.stdin.flush()
        return self._line()

    def freeze_and_kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGSTOP)
            self.proc.kill()
        self.proc.wait(10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None and not stream.closed:
                stream.close()


def _stored(plane: ControlPlane) -> tuple[int, int]:
    assert plane.services is not None
    windows = [
        json.loads(w.body_json) for w in plane.services.ingest.all(DEVICE, "telemetry_window")
    ]
    return sum(w["requests"] for w in windows), sum(w["invalid"] for w in windows)


@pytest.fixture(autouse=True)
def _kill_containers() -> Iterator[None]:
    yield
    while Container.started:
        Container.started.pop().freeze_and_kill()


@pytest.mark.parametrize("durability", ["window", "invocation"])
def test_counts_equal_invocations_across_a_frozen_killed_container(
    plane: ControlPlane, edge_packages: Any, tmp_path: Path, durability: str
) -> None:
    assert plane.services is not None
    token = plane.services.enrollment.create_token("test-operator", DEVICE)
    creds = enroll(f"127.0.0.1:{plane.grpc_port}", token, DEVICE, HOST)
    env = {
        "FLEETCAST_PACKAGE": str(edge_packages.onnx),
        "FLEETCAST_PUBLIC_KEY": str(edge_packages.public_key),
        "FLEETCAST_OUTBOX_DIR": str(tmp_path / "tmp-fleetcast"),  # the container's /tmp
        "FLEETCAST_SERVER": f"grpc://127.0.0.1:{plane.grpc_port}",
        "FLEETCAST_DEVICE_ID": DEVICE,
        "FLEETCAST_DEVICE_TOKEN": creds["device_token"],
        "FLEETCAST_WINDOW_SECONDS": "3600",  # only the count bound closes windows here
        "FLEETCAST_WINDOW_MAX_REQUESTS": "3",
        "FLEETCAST_TELEMETRY_DURABILITY": durability,
    }
    good = {"instances": [[float(v) for v in edge_packages.x[0]]]}
    bad = {"inputs": {"input": [[1.0]]}}

    first = Container(env)
    for event in (good, good, bad, good, good, bad):  # two count bounds: both windows sent
        first.invoke(event)
    assert _stored(plane) == (6, 2)  # sent before the 3rd and 6th invocations returned
    first.invoke(good)
    first.invoke(good)  # 8 invocations; the last two after the last bound
    first.freeze_and_kill()
    after_kill = _stored(plane)[0]

    second = Container(env)  # a new process on the same /tmp drains what the first left
    drained = _stored(plane)[0]
    for _ in range(3):  # 11 invocations in all; the 3rd here reaches the bound: sent
        second.invoke(good)
    second.freeze_and_kill()
    total, invalid = _stored(plane)
    if durability == "invocation":  # every invocation was in the outbox before it returned
        assert (after_kill, drained) == (6, 8)
        assert (total, invalid) == (11, 2)
    else:  # the open window lives in memory: the 2 after the last bound die with the process
        assert (after_kill, drained) == (6, 6)
        assert (total, invalid) == (9, 2)


def test_batch_sends_its_windows_to_the_control_plane(
    plane: ControlPlane, edge_packages: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np
    from click.testing import CliRunner

    from control_plane.cli import cli

    assert plane.services is not None
    token = plane.services.enrollment.create_token("test-operator", DEVICE)
    creds = enroll(f"127.0.0.1:{plane.grpc_port}", token, DEVICE, HOST)
    x = edge_packages.x[:70].copy()
    x[5, 3] = np.nan  # row 6: reported, not scored, not counted
    np.savez(tmp_path / "in.npz", input=x)
    monkeypatch.setenv("FLEETCAST_DEVICE_TOKEN", creds["device_token"])
    result = CliRunner().invoke(
        cli,
        [
            "batch",
            "score",
            "--package",
            str(edge_packages.onnx),
            "--public-key",
            str(edge_packages.public_key),
            "--input",
            str(tmp_path / "in.npz"),
            "--output",
            str(tmp_path / "out.csv"),
            "--chunk-rows",
            "16",
            "--server",
            f"grpc://127.0.0.1:{plane.grpc_port}",
            "--device-id",
            DEVICE,
        ],
    )
    assert result.exit_code == 0, result.output
    windows = [
        json.loads(w.body_json) for w in plane.services.ingest.all(DEVICE, "telemetry_window")
    ]
    assert sum(w["rows"] for w in windows) == 69 and len(windows) == 5
    assert not (tmp_path / "out.csv.telemetry.jsonl").exists()
