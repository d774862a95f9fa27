"""`fleetcast function build`: a deployable artifact for a package and a target.

- ``aws-lambda-x86_64`` / ``aws-lambda-arm64``: a zip holding the handler
  (``functions.aws_lambda.handler``), the on-device library modules it imports
  (nothing of the daemon), the package and its public key, and the dependencies
  resolved by pip for the target (``--platform manylinux2014_x86_64|aarch64
  --only-binary=:all: --python-version 3.11 --target``). Refused with a clear
  error when it unpacks to more than Lambda's 250 MB.
- ``gcf``, ``knative``, ``openfaas``: a container build context (Dockerfile,
  handler, library, package, pinned requirements).
"""

from __future__ import annotations

import json
import logging
import platform
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from edge_agent.package import load_public_key, open_package

logger = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parent.parent
LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024
PYTHON_VERSION = "3.11"
LAMBDA_PLATFORMS = ("aws-lambda-x86_64", "aws-lambda-arm64")
CONTAINER_TARGETS = ("gcf", "knative", "openfaas")
TARGETS = (*LAMBDA_PLATFORMS, *CONTAINER_TARGETS)
# onnxruntime goes in with --no-deps: its tool dependencies (sympy, coloredlogs)
# are ~40 MB the runtime never imports
# no pydantic: the handler reads the manifest with edge_agent.core.device_manifest
RUNTIME_REQUIREMENTS = (
    "cryptography>=42",
    "datasketches>=5.0",
    "grpcio>=1.66",
    "protobuf>=5.27",
    "flatbuffers",
    "packaging",
)
CONTAINER_REQUIREMENTS = (
    "onnxruntime",
    "numpy",
    "pydantic",
    "cryptography",
    "datasketches",
    "grpcio",
    "protobuf",
    "functions-framework",
    "cloudevents",
)
# imported on first use (a window closing, the first upload), so the entry's import
# does not pull them in: the bundle needs them all the same
LAZY_MODULES = (
    "edge_agent.runtime.onnx",
    "edge_agent.outbox",
    "edge_agent.reporting",
    "edge_agent.transport.factory",
    "edge_agent.transport.grpc",
)
ENTRY = {
    "aws-lambda-x86_64": "functions.aws_lambda",
    "aws-lambda-arm64": "functions.aws_lambda",
    "gcf": "functions.gcf",
    "knative": "functions.knative",
    "openfaas": "functions.openfaas",
}


class BuildError(Exception):
    """The artifact cannot be built (or would not deploy); the message says why."""


@dataclass(frozen=True)
class BuildResult:
    target: str
    path: Path
    unzipped_bytes: int
    package_sha256: str


def library_files(entry: str) -> list[Path]:
    """The source files of our own modules that ``entry`` imports, at once or lazily."""
    code = (
        "import importlib, json, sys\n"
        f"importlib.import_module({entry!r})\n"
        f"for name in {LAZY_MODULES!r}: importlib.import_module(name)\n"
        "print(json.dumps([m.__file__ for n, m in sys.modules.items() if n.split('.')[0] in "
        "('functions', 'edge_agent', 'protos') and getattr(m, '__file__', None)]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    files = {Path(f).resolve() for f in json.loads(out.stdout)}
    return sorted(f for f in files if f.is_relative_to(ROOT))


def _copy_library(entry: str, into: Path) -> None:
    for source in library_files(entry):
        target = into / source.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        typed = source.parent / "py.typed"
        if typed.exists():
            shutil.copy2(typed, target.parent / "py.typed")


def _pip(args: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        lines = [ln for ln in done.stderr.splitlines() if not ln.startswith("WARNING: Location")]
        raise BuildError("pip could not resolve the dependencies:\n" + "\n".join(lines[-15:]))


def lambda_platforms(target: str, python_version: str) -> list[str]:
    """python3.11 runs on Amazon Linux 2 (glibc 2.26: manylinux2014); 3.12+ on AL2023
    (glibc 2.34: manylinux_2_28 and older; pip takes only the tags it is given)."""
    arch = "x86_64" if target.endswith("x86_64") else "aarch64"
    if python_version == "3.11":
        return [f"manylinux2014_{arch}"]
    return [f"manylinux_2_28_{arch}", f"manylinux2014_{arch}"]


def _runs_here(target: str, python_version: str) -> bool:
    machine = platform.machine().lower()
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    wanted = "x86_64" if target.endswith("x86_64") else "aarch64"
    return sys.platform == "linux" and arch == wanted and here == python_version


def _lambda_dependencies(platforms: list[str], python_version: str, into: Path) -> None:
    common = [
        *(arg for tag in platforms for arg in ("--platform", tag)),
        "--only-binary=:all:",
        "--python-version",
        python_version,
        "--implementation",
        "cp",
        "--target",
        str(into),
        "--upgrade",
    ]
    # onnxruntime 1.16 (the last manylinux2014 wheel) is built against numpy 1.x
    numpy = "numpy>=1.26,<2" if python_version == "3.11" else "numpy>=1.26"
    _pip([*common, numpy, *RUNTIME_REQUIREMENTS])
    _pip([*common, "--no-deps", "onnxruntime"])


def onnx_ir_version(model: bytes) -> int | None:
    """ModelProto.ir_version (field 1, a varint) read from the serialized model, if present."""
    pos = 0
    while pos < len(model):
        key, pos = _varint(model, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(model, pos)
            if field == 1:
                return value
        elif wire == 2:
            length, pos = _varint(model, pos)
            pos += length
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            return None
    return None


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while pos < len(data):
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    return value, pos


_SMOKE = """
import sys
from pathlib import Path
assert not any("site-packages" in p for p in sys.path)
from functions.core import FunctionConfig, verified_model
verified_model(FunctionConfig(Path("model.fcpkg"), Path("fleetcast.pub"), telemetry=None))
import onnxruntime
print(onnxruntime.__version__)
"""


def smoke_test(staging: Path, model: bytes) -> str | None:
    """Load and self-test the package with only the bundle on sys.path, when this host can
    run the target's wheels (same architecture and Python); returns onnxruntime's version."""
    done = subprocess.run(
        [sys.executable, "-S", "-s", "-c", _SMOKE],
        cwd=staging,
        env={
            "PYTHONPATH": str(staging),
            "FLEETCAST_TELEMETRY": "off",
            "PYTHONDONTWRITEBYTECODE": "1",
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode == 0:
        return done.stdout.strip()
    last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
    ir = onnx_ir_version(model)
    raise BuildError(
        f"the bundle cannot load its own package: {last}\n"
        f"The model is ONNX IR version {ir}. The onnxruntime pip resolved for this target "
        "may be older than the one the package was compiled for: Lambda's python3.11 "
        "runtime (Amazon Linux 2) takes manylinux2014 wheels, which stop at onnxruntime "
        "1.16 (ONNX IR <= 9, ai.onnx opset <= 19, ai.onnx.ml opset <= 3). Compile the "
        "package for an aws-lambda-* profile (those cap the model to what onnxruntime 1.16 "
        "loads), or build for --python-version 3.12 (Amazon Linux 2023, manylinux_2_28)."
    )


def _tree_bytes(directory: Path) -> list[tuple[int, Path]]:
    return [(p.stat().st_size, p) for p in directory.rglob("*") if p.is_file()]


def _check_lambda_size(staging: Path, limit: int = LAMBDA_UNZIPPED_LIMIT) -> int:
    sizes = _tree_bytes(staging)
    total = sum(s for s, _ in sizes)
    if total > limit:
        top: dict[str, int] = {}
        for size, path in sizes:
            head = path.relative_to(staging).parts[0]
            top[head] = top.get(head, 0) + size
        largest = sorted(top.items(), key=lambda kv: -kv[1])[:5]
        raise BuildError(
            f"the Lambda bundle unpacks to {total / 2**20:.1f} MB, over Lambda's "
            f"{limit / 2**20:.0f} MB limit for a zip; largest: "
            + ", ".join(f"{name} {size / 2**20:.1f} MB" for name, size in largest)
            + ". Deploy it as a container image instead (--target knative builds one)."
        )
    return total


def _same_python(python_version: str) -> bool:
    return f"{sys.version_info.major}.{sys.version_info.minor}" == python_version


def compile_bytecode(staging: Path) -> None:
    """Ship bytecode: Lambda's task root is read-only, so Python cannot cache what it
    compiles and every cold start would compile each module it imports from source.
    Unchecked-hash pycs stay valid whatever timestamps the zip gives the sources."""
    import compileall
    import py_compile

    ok = compileall.compile_dir(
        staging,
        quiet=2,
        force=True,
        workers=0,
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )
    if not ok:
        logger.warning("some modules of the bundle did not compile to bytecode")


def _zip(staging: Path, path: Path) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        for file in sorted(p for p in staging.rglob("*") if p.is_file()):
            archive.write(file, file.relative_to(staging).as_posix())


def _pinned(names: tuple[str, ...]) -> str:
    lines = []
    for name in names:
        try:
            lines.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            lines.append(name)
    return "\n".join(lines) + "\n"


def build(
    package: Path,
    public_key: Path,
    target: str,
    output: Path,
    *,
    limit_bytes: int = LAMBDA_UNZIPPED_LIMIT,
    python_version: str = PYTHON_VERSION,
) -> BuildResult:
    """Build ``target``'s artifact for ``package`` under ``output`` (a directory)."""
    if target not in TARGETS:
        raise BuildError(f"unknown target {target!r}: expected one of {', '.join(TARGETS)}")
    checked = open_package(package, load_public_key(public_key))  # never ship a bad package
    output.mkdir(parents=True, exist_ok=True)
    staging = output / f"{target}-build"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    shutil.copy2(package, staging / "model.fcpkg")
    shutil.copy2(public_key, staging / "fleetcast.pub")
    _copy_library(ENTRY[target], staging)
    if target in LAMBDA_PLATFORMS:
        _lambda_dependencies(lambda_platforms(target, python_version), python_version, staging)
        for cache in staging.rglob("__pycache__"):  # pip's, for this host's Python
            shutil.rmtree(cache, ignore_errors=True)
        if _same_python(python_version):
            compile_bytecode(staging)
        total = _check_lambda_size(staging, limit_bytes)
        if _runs_here(target, python_version):
            smoke_test(staging, checked.model_bytes)
        path = output / f"{checked.manifest.model_name}-{target}.zip"
        _zip(staging, path)
        shutil.rmtree(staging)
        return BuildResult(target, path, total, checked.sha256)
    from functions.containers import write_context

    write_context(target, staging, _pinned(CONTAINER_REQUIREMENTS), checked.sha256)
    total = sum(s for s, _ in _tree_bytes(staging))
    final = output / target
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    return BuildResult(target, final, total, checked.sha256)
