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


def _ir9_package(edge_packages: Any, directory: Path) -> Path:
    """The digits package with its model marked ONNX IR 9 (what onnxruntime 1.16 loads)."""
    import hashlib

    import onnx

    from control_plane.compiler.package import build_package
    from control_plane.signing import load_private_key
    from edge_agent.package import read_package

    manifest, _, model_bytes = read_package(edge_packages.onnx.read_bytes())
    model = onnx.load_from_string(model_bytes)
    model.ir_version = 9
    data = model.SerializeToString()
    model_file = manifest.model_file.model_copy(
        update={"sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data)}
    )
    manifest = manifest.model_copy(update={"model_file": model_file})
    path = directory / "digits-ir9.fcpkg"
    path.write_bytes(build_package(manifest, data, load_private_key(edge_packages.private_key)))
    return path


def test_lambda_zip_runs_with_only_what_it_holds(edge_packages: Any, tmp_path: Path) -> None:
    # Lambda's python3.11 (Amazon Linux 2) takes manylinux2014 wheels: onnxruntime 1.16,
    # which loads ONNX IR <= 9. The build loads the package with the bundle and says so.
    with pytest.raises(BuildError, match=r"IR version 10.*manylinux2014"):
        build(edge_packages.onnx, edge_packages.public_key, "aws-lambda-x86_64", tmp_path)
    package = _ir9_package(edge_packages, tmp_path)
    result = build(package, edge_packages.public_key, "aws-lambda-x86_64", tmp_path)
    assert result.path.suffix == ".zip" and result.unzipped_bytes < 250 * 2**20
    task_root = tmp_path / "task"
    with zipfile.ZipFile(result.path) as archive:
        names = archive.namelist()
        archive.extractall(task_root)
    assert "model.fcpkg" in names and "functions/aws_lambda.py" in names
    assert not [n for n in names if n.startswith(("edge_agent/agent.py", "control_plane/"))]
    assert not [n for n in names if n.startswith(("torch/", "sympy/"))]
    event = json.loads((EVENTS / "function_url.json").read_text())
    event["body"] = json.dumps({"instances": [[float(v) for v in edge_packages.x[0]]]})
    done = subprocess.run(
        [sys.executable, "-S", "-s", "-c", RUN, json.dumps(event), str(task_root)],
        cwd=task_root,
        env={
            "PYTHONPATH": str(task_root),
            "LAMBDA_TASK_ROOT": str(task_root),
            "AWS_LAMBDA_FUNCTION_NAME": "digits",
            "FLEETCAST_OUTBOX_DIR": str(tmp_path / "lambda-tmp"),
            "PATH": os.environ.get("PATH", ""),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    out = json.loads(done.stdout)
    assert out["reply"]["statusCode"] == 200, out["reply"]
    assert len(next(iter(json.loads(out["reply"]["body"])["outputs"].values()))[0]) == 10
    assert out["ours"] > 10 and out["stray"] == []

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
