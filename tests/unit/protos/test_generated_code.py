"""The committed gRPC code must be what `make protos` makes from today's .proto files."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from proto_support import PROTOS, STUB_DIR, SUFFIXES, generate


def test_protos_exist() -> None:
    assert {p.name for p in PROTOS} >= {"agent.proto", "scoring.proto"}


@pytest.mark.parametrize("proto", PROTOS, ids=lambda p: p.name)
def test_generated_code_is_not_stale(proto: Path, tmp_path: Path) -> None:
    fresh_dir = generate(tmp_path)
    for suffix in SUFFIXES:
        name = proto.stem + suffix
        current = STUB_DIR / name
        assert current.exists(), f"{name} is missing: run `make protos`"
        assert current.read_text() == (fresh_dir / name).read_text(), (
            f"{name} is stale: run `make protos`"
        )


@pytest.mark.parametrize("stub", sorted(STUB_DIR.glob("*_pb2*.py")), ids=lambda p: p.name)
def test_stubs_import_inside_the_project_namespace(stub: Path) -> None:
    """No top-level `protos` package: every import in the stubs is absolute under edge_agent."""
    tree = ast.parse(stub.read_text())
    modules = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    ours = {m for m in modules if not m.startswith(("google.", "grpc"))}
    assert all(m.startswith("edge_agent.proto.fleetcast.v1") for m in ours), ours
