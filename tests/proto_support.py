"""Regenerate the gRPC/protobuf code from protos/ and compare it with the committed copy.

The generated code is committed under edge_agent/proto/ (see docs/install.md for why);
`make protos` writes it with protoc's virtual path mapping, so the stubs import each
other as ``edge_agent.proto.fleetcast.v1``. This is the same command, run into a
temporary directory.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "protos" / "fleetcast" / "v1"
STUB_DIR = ROOT / "edge_agent" / "proto" / "fleetcast" / "v1"
PROTOS = sorted(PROTO_DIR.glob("*.proto"))
SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def generate(into: Path) -> Path:
    """Run protoc as `make protos` does, writing under ``into``; returns the stub directory."""
    from grpc_tools import protoc

    args = [
        "grpc_tools.protoc",
        f"-Iedge_agent/proto={ROOT / 'protos'}",
        f"--python_out={into}",
        f"--pyi_out={into}",
        f"--grpc_python_out={into}",
        *(str(p) for p in PROTOS),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {', '.join(p.name for p in PROTOS)}")
    return into / "edge_agent" / "proto" / "fleetcast" / "v1"


def stale_stubs() -> list[str]:
    """Committed stub files that are missing or differ from freshly generated ones."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        return [
            name
            for proto in PROTOS
            for name in (proto.stem + suffix for suffix in SUFFIXES)
            if not (STUB_DIR / name).exists()
            or (STUB_DIR / name).read_text() != (fresh / name).read_text()
        ]
