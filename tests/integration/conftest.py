"""Fixtures of the transport and fleet tests: a signed package and a running control plane."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pg_support import INSTALL_HINT, PostgresServer, find_pg_bin

from control_plane.server import ControlPlane, ServeOptions

logger = logging.getLogger(__name__)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL for the session; ``create_database()`` gives each test its own."""
    bin_dir = find_pg_bin()
    if bin_dir is None:  # never a skip, in CI or not: `make test` installs it
        pytest.fail(INSTALL_HINT)
    server = PostgresServer(bin_dir).start()
    logger.info("PostgreSQL started in %.2f s", server.startup_seconds)
    try:
        yield server
    finally:
        server.stop()


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
