"""The generated gRPC code must be what `make protos` makes from today's .proto files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[3]
PROTO_DIR = ROOT / "protos" / "fleetcast" / "v1"
PROTOS = sorted(PROTO_DIR.glob("*.proto"))


def _generate(into: Path) -> None:
    shutil.copytree(ROOT / "protos", into / "protos", ignore=shutil.ignore_patterns("*_pb2*"))
    args = [
        "grpc_tools.protoc",
        "-I",
        str(into),
        f"--python_out={into}",
        f"--pyi_out={into}",
        f"--grpc_python_out={into}",
        *(str(into / p.relative_to(ROOT)) for p in PROTOS),
    ]
    assert protoc.main(args) == 0


def test_protos_exist() -> None:
    assert {p.name for p in PROTOS} >= {"agent.proto", "scoring.proto"}


@pytest.mark.parametrize("proto", PROTOS, ids=lambda p: p.name)
def test_generated_code_is_not_stale(proto: Path, tmp_path: Path) -> None:
    _generate(tmp_path)
    fresh_dir = tmp_path / "protos" / "fleetcast" / "v1"
    for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"):
        name = proto.stem + suffix
        current = PROTO_DIR / name
        assert current.exists(), f"{name} is missing: run `make protos`"
        assert current.read_text() == (fresh_dir / name).read_text(), (
            f"{name} is stale: run `make protos`"
        )
