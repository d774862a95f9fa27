"""Fixtures of the transport and fleet tests: a signed package and a running control plane."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from control_plane.server import ControlPlane, ServeOptions


@pytest.fixture(scope="session")
def package(digits_mlp: Any, compile_digits: Any) -> Path:
    """The digits MLP compiled and signed for x86-64-generic."""
    (outcome,) = compile_digits(digits_mlp, ["x86-64-generic"])
    return Path(outcome.path)


@pytest.fixture()
def plane(tmp_path: Path, keys: Any, package: Path) -> Iterator[ControlPlane]:
    """A control plane with gRPC and an embedded mosquitto, the package in its catalog."""
    cp = ControlPlane(
        ServeOptions(
            data_dir=tmp_path / "cp", public_key=keys.public, grpc_address="127.0.0.1:0", mqtt=True
        )
    ).start()
    assert cp.services is not None
    cp.services.packages.register(package, "test-operator")
    try:
        yield cp
    finally:
        cp.stop()
