"""Fixtures of the handler tests: a container environment pointing at a real signed package."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture()
def function_env(
    edge_packages: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    """The environment a deployed handler sees; the container's core is rebuilt per test."""
    from functions.core import reset_core

    env = {
        "FLEETCAST_PACKAGE": str(edge_packages.onnx),
        "FLEETCAST_PUBLIC_KEY": str(edge_packages.public_key),
        "FLEETCAST_OUTBOX_DIR": str(tmp_path / "tmp-fleetcast"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("FLEETCAST_SERVER", raising=False)
    reset_core()
    yield env
    reset_core()
