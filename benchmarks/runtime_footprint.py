"""Issue #3 benchmark, footprint half: the agent's resident memory and installed size.

Used by ``bench_runtime.py``; see its docstring for what is measured and why.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """A memory figure of a process from /proc (VmRSS, RssAnon: private, RssFile: mapped files)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field}")


def smaps_rollup_mb(pid: int) -> dict[str, float]:
    """RSS, PSS (shared pages split between the processes mapping them) and USS (private)."""
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        fields[key] = int(value.split()[0]) / 1024
    return {
        "rss": fields["Rss"],
        "pss": fields["Pss"],
        "uss": fields["Private_Clean"] + fields["Private_Dirty"],
    }


# what a `fleetcast-agent run` imports, in order, with an ONNX model
AGENT_IMPORTS = (
    "numpy",
    "datasketches",
    "click",
    "cryptography.hazmat.primitives.asymmetric.ed25519",
    "edge_agent.core.manifest",
    "edge_agent.package",
    "edge_agent.agent",
    "grpc",
    "edge_agent.local_api",
    "onnxruntime",
)

_IMPORT_PROBE = """
import importlib, json, sys
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
steps = [["python", rss()]]
for name in sys.argv[1:]:
    importlib.import_module(name)
    steps.append([name, rss()])
print(json.dumps(steps))
"""


def import_costs() -> list[dict[str, Any]]:
    """RSS of a fresh interpreter after each of the agent's heavy imports (MB)."""
    out = subprocess.run(
        [sys.executable, "-c", _IMPORT_PROBE, *AGENT_IMPORTS],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    steps = json.loads(out)
    rows = []
    previous = 0.0
    for name, rss in steps:
        rows.append({"module": name, "rss_mb": rss, "added_mb": rss - previous})
        previous = rss
    return rows


def agent_memory(package: Path, public: Path, x: np.ndarray) -> dict[str, Any]:
    import grpc

    from edge_agent.proto.fleetcast.v1 import scoring_pb2 as pb
    from edge_agent.proto.fleetcast.v1 import scoring_pb2_grpc as pb_grpc

    state = Path(tempfile.mkdtemp(prefix="fcm-", dir="/tmp"))
    env = {
        **os.environ,
        "FLEETCAST_AGENT_STATE_DIR": str(state),
        "FLEETCAST_AGENT_PUBLIC_KEY": str(public),
        "FLEETCAST_AGENT_DEVICE_ID": "bench",
        "FLEETCAST_AGENT_LISTEN": "127.0.0.1:0",
        "FLEETCAST_AGENT_WINDOW_SECONDS": "1",
        "FLEETCAST_AGENT_CAPTURE_RATE": "0.05",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_agent", "run"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        address = json.loads(proc.stdout.readline())["address"]
        time.sleep(0.5)
        result: dict[str, Any] = {"idle_mb": rss_mb(proc.pid)}
        subprocess.run(
            [sys.executable, "-m", "edge_agent", "install", str(package), "--address", address],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        result["loaded_mb"] = rss_mb(proc.pid)
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.EdgeScoringStub(channel)
            name = "digits-mlp"

            def predict(count: int) -> None:
                for i in range(count):
                    row = x[i % len(x) : i % len(x) + 1]
                    stub.Predict(
                        pb.PredictRequest(
                            name=name,
                            inputs=[
                                pb.Tensor(
                                    name="input", dtype="float32", shape=[1, 64], data=row.tobytes()
                                )
                            ],
                        )
                    )

            predict(2_000)
            result["after_2k_mb"] = rss_mb(proc.pid)
            predict(20_000)
            result["after_22k_mb"] = rss_mb(proc.pid)
            result["after_22k_anon_mb"] = rss_mb(proc.pid, "RssAnon")
            result["after_22k_file_mb"] = rss_mb(proc.pid, "RssFile")
            rollup = smaps_rollup_mb(proc.pid)
            result["after_22k_pss_mb"] = rollup["pss"]
            result["after_22k_uss_mb"] = rollup["uss"]
        result["growth_mb"] = result["after_22k_mb"] - result["after_2k_mb"]
        return result
    finally:
        proc.terminate()
        proc.wait(20)


# ---------------------------------------------------------------- size


AGENT_ROOTS = (
    "numpy",
    "pydantic",
    "cryptography",
    "onnxruntime",
    "ai-edge-litert",
    "paho-mqtt",
    "grpcio",
    "protobuf",
    "click",
    "datasketches",
)


def installed_size() -> dict[str, Any]:
    from packaging.requirements import Requirement

    seen: dict[str, int] = {}
    todo = list(AGENT_ROOTS)
    while todo:
        name = todo.pop()
        key = name.lower().replace("_", "-")
        if key in seen:
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        seen[key] = sum((f.size or 0) for f in (dist.files or []) if "__pycache__" not in str(f))
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    top = sorted(seen.items(), key=lambda kv: -kv[1])
    return {
        "total_mb": sum(seen.values()) / 1e6,
        "packages": {k: round(v / 1e6, 2) for k, v in top},
    }


# ---------------------------------------------------------------- report
