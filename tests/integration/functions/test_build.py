"""`fleetcast function build`: the x86_64 Lambda zip runs with only what it holds; the
container contexts hold a Dockerfile, the handler and the package."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from functions.build import BuildError, _check_lambda_size, build

pytestmark = pytest.mark.integration
EVENTS = Path(__file__).resolve().parents[2] / "unit" / "functions" / "events"

RUN = """
import json, sys
assert not any("site-packages" in p for p in sys.path), sys.path
import functions.aws_lambda as fn  # Lambda's init: the package is verified here
event = json.loads(sys.argv[1])
reply = fn.handler(event, None)
mods = sorted({m.__file__ for m in list(sys.modules.values()) if getattr(m, "__file__", None)})
ours = [f for f in mods if f.startswith(sys.argv[2])]
stray = [f for f in mods if "site-packages" in f or "/work/" in f and not f.startswith(sys.argv[2])]
print(json.dumps({"reply": reply, "ours": len(ours), "stray": stray}))
"""


CHECK_OLD_ORT = """
import sys
import numpy as np
import onnxruntime as ort
assert ort.__version__ == "1.16.3", ort.__version__
session = ort.InferenceSession(open(sys.argv[1], "rb").read(), providers=["CPUExecutionProvider"])
x = np.zeros((2, 64), dtype=np.float32)
print(session.run(None, {session.get_inputs()[0].name: x})[0].shape)
"""


def test_lambda_zip_runs_with_only_what_it_holds(
    edge_packages: Any, digits_mlp: Any, compile_digits: Any, tmp_path: Path
) -> None:
    from control_plane.compiler.onnx_compat import opsets_of
    from edge_agent.package import read_package

    # Lambda's python3.11 (Amazon Linux 2) takes manylinux2014 wheels: onnxruntime 1.16.3,
    # which loads ONNX IR <= 9. A package compiled for a generic x86-64 profile is IR 10:
    # the build loads it with the bundle and says why it cannot.
    with pytest.raises(BuildError, match=r"IR version 10.*manylinux2014.*aws-lambda"):
        build(edge_packages.onnx, edge_packages.public_key, "aws-lambda-x86_64", tmp_path)
    # the aws-lambda profiles cap the model to what onnxruntime 1.16 loads
    outcomes = {
        o.profile: o for o in compile_digits(digits_mlp, ["aws-lambda-x86-64", "aws-lambda-arm64"])
    }
    for outcome in outcomes.values():
        _, _, model = read_package(Path(outcome.path).read_bytes())
        ir, opsets = opsets_of(model)
        assert ir <= 9 and opsets.get("", 0) <= 19 and opsets.get("ai.onnx.ml", 0) <= 3, opsets
    package = Path(outcomes["aws-lambda-x86-64"].path)
    result = build(package, edge_packages.public_key, "aws-lambda-x86_64", tmp_path)
    assert result.path.suffix == ".zip" and result.unzipped_bytes < 250 * 2**20
    task_root = tmp_path / "task"
    with zipfile.ZipFile(result.path) as archive:
        names = archive.namelist()
        archive.extractall(task_root)
    assert "model.fcpkg" in names and "functions/aws_lambda.py" in names
    assert "functions/__pycache__/aws_lambda.cpython-311.pyc" in names  # bytecode shipped
    assert not [n for n in names if n.startswith(("edge_agent/agent.py", "control_plane/"))]
    assert not [n for n in names if n.startswith(("torch/", "sympy/", "pydantic/"))]
    event = json.loads((EVENTS / "function_url.json").read_text())
    event["body"] = json.dumps({"instances": [[float(v) for v in edge_packages.x[0]]]})
    env = {
        "PYTHONPATH": str(task_root),
        "LAMBDA_TASK_ROOT": str(task_root),
        "AWS_LAMBDA_FUNCTION_NAME": "digits",
        "FLEETCAST_OUTBOX_DIR": str(tmp_path / "lambda-tmp"),
        # the window goes to the outbox before the reply: the lazily imported outbox and
        # reporting modules must be in the zip too
        "FLEETCAST_TELEMETRY_DURABILITY": "invocation",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PATH": os.environ.get("PATH", ""),
    }
    done = subprocess.run(
        [sys.executable, "-S", "-s", "-c", RUN, json.dumps(event), str(task_root)],
        cwd=task_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    out = json.loads(done.stdout)
    assert out["reply"]["statusCode"] == 200, out["reply"]
    assert len(next(iter(json.loads(out["reply"]["body"])["outputs"].values()))[0]) == 10
    assert out["ours"] > 10 and out["stray"] == []
    assert (tmp_path / "lambda-tmp" / "outbox.sqlite").exists()

    # the arm64 package's model (capped the same way) loads in the real onnxruntime 1.16.3
    # the x86_64 zip holds (the model file does not depend on the architecture)
    _, _, arm_model = read_package(Path(outcomes["aws-lambda-arm64"].path).read_bytes())
    (tmp_path / "arm64.onnx").write_bytes(arm_model)
    done = subprocess.run(
        [sys.executable, "-S", "-s", "-c", CHECK_OLD_ORT, str(tmp_path / "arm64.onnx")],
        cwd=task_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and done.stdout.strip() == "(2, 10)", done.stderr[-2000:]

    with pytest.raises(BuildError, match=r"over Lambda's 1 MB limit .* largest: "):
        _check_lambda_size(task_root, limit=2**20)


@pytest.mark.parametrize("target", ["gcf", "knative", "openfaas"])
def test_container_contexts(edge_packages: Any, tmp_path: Path, target: str) -> None:
    result = build(edge_packages.onnx, edge_packages.public_key, target, tmp_path)
    files = {p.relative_to(result.path).as_posix() for p in result.path.rglob("*")}
    assert {"Dockerfile", "model.fcpkg", "fleetcast.pub", "requirements.txt"} <= files
    assert f"functions/{'gcf' if target == 'gcf' else target}.py" in files
    assert "edge_agent/agent.py" not in files
    dockerfile = (result.path / "Dockerfile").read_text()
    assert result.package_sha256 in dockerfile
    requirements = (result.path / "requirements.txt").read_text()
    assert "onnxruntime==" in requirements and "torch" not in requirements
