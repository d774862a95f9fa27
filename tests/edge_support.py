"""Packages and helpers for the edge agent's tests (fixture ``edge_packages`` in conftest)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class EdgePackages:
    public_key: Path
    private_key: Path
    onnx: Path
    """digits-mlp release 1 for x86-64-generic (onnxruntime)."""
    litert: Path
    """digits-mlp release 1 for x86-64-litert (LiteRT)."""
    x: np.ndarray
    """Validation rows (float32, 64 features)."""
    directory: Path

    def variant(self, name: str, base: Path | None = None, **update: Any) -> Path:
        """A re-signed copy of ``base`` (default: the onnx package) with manifest fields changed."""
        from control_plane.compiler.package import build_package
        from control_plane.signing import load_private_key
        from edge_agent.core.manifest import make_package_id
        from edge_agent.package import read_package

        manifest, _, model_bytes = read_package((base or self.onnx).read_bytes())
        if "release" in update and "package_id" not in update:
            update["package_id"] = make_package_id(
                manifest.model_name, manifest.model_version, manifest.profile.id, update["release"]
            )
        manifest = manifest.model_copy(update=update)
        path = self.directory / f"{name}.fcpkg"
        path.write_bytes(build_package(manifest, model_bytes, load_private_key(self.private_key)))
        return path

    def release(self, number: int, base: Path | None = None) -> Path:
        return self.variant(f"r{number}-{(base or self.onnx).stem}", base, release=number)

    def bad_vectors(self, release: int = 2) -> Path:
        """A package whose test vectors do not match what the model computes."""
        from edge_agent.package import read_package

        manifest = read_package(self.onnx.read_bytes())[0]
        wrong = {
            k: (np.asarray(v) + 5.0).tolist() for k, v in manifest.test_vectors.outputs.items()
        }
        vectors = manifest.test_vectors.model_copy(update={"outputs": wrong})
        return self.variant(f"bad-vectors-r{release}", release=release, test_vectors=vectors)

    def wrong_profile(self) -> Path:
        from edge_agent.package import read_package

        manifest = read_package(self.onnx.read_bytes())[0]
        profile = manifest.profile.model_copy(
            update={"cpu_features": (*manifest.profile.cpu_features, "fleetcast_imaginary")}
        )
        return self.variant("wrong-profile", release=2, profile=profile)


def build_edge_packages(
    trained: Any, compile_digits: Callable[..., list[Any]], keys: Any, directory: Path
) -> EdgePackages:
    outcomes = compile_digits(trained, ["x86-64-generic", "x86-64-litert"])
    paths = {o.profile: o.path for o in outcomes}
    return EdgePackages(
        public_key=keys.public,
        private_key=keys.private,
        onnx=paths["x86-64-generic"],
        litert=paths["x86-64-litert"],
        x=np.asarray(trained.x_validation, dtype=np.float32),
        directory=directory,
    )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class AgentProcess:
    """``fleetcast-agent run`` as a subprocess on a loopback port it picks itself."""

    def __init__(
        self, state_dir: Path, public_key: Path, env: dict[str, str] | None = None
    ) -> None:
        self.log = state_dir.parent / f"{state_dir.name}-agent.log"
        environ = {
            **os.environ,
            "FLEETCAST_AGENT_STATE_DIR": str(state_dir),
            "FLEETCAST_AGENT_PUBLIC_KEY": str(public_key),
            "FLEETCAST_AGENT_DEVICE_ID": "device-under-test",
            "FLEETCAST_AGENT_LISTEN": "127.0.0.1:0",
            **(env or {}),
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_agent", "run"],
            cwd=ROOT,
            env=environ,
            stdout=subprocess.PIPE,
            stderr=self.log.open("ab"),
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            raise RuntimeError(f"agent exited ({self.proc.returncode}): {self.log.read_text()}")
        self.ready = json.loads(line)
        self.address: str = self.ready["address"]

    def install(self, package: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "edge_agent",
                "install",
                str(package),
                "--address",
                self.address,
                "--timeout",
                str(timeout),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout + 30,
        )

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGUSR1)  # faulthandler: every stack to the log
                time.sleep(1)
                self.proc.kill()
                self.proc.wait(10)
                print(f"agent did not stop on SIGTERM; its log:\n{self.log.read_text()[-8000:]}")
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return int(self.proc.returncode)

    def wait(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.stop()


def tracemalloc_growth(run: Callable[[int], object], warmup: int, calls: int) -> int:
    """Bytes Python allocated and kept over ``calls`` calls of ``run``, after a warm-up."""
    import tracemalloc

    run(warmup)
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        run(calls)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    return sum(s.size_diff for s in after.compare_to(before, "filename"))
