"""The services on an in-memory store (``:memory:`` SQLite through the repositories)."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from control_plane.app import Fleetcast, build_services
from control_plane.compiler.package import build_package
from control_plane.settings import Settings
from control_plane.store.factory import open_repositories
from edge_agent.package import key_id

sys.path.insert(0, str(Path(__file__).parents[2] / "edge_agent"))  # the synthetic manifest
from manifests import make_manifest  # noqa: E402


class Clock:
    """A clock the test moves."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeLogins:
    """The broker's device logins, in memory (services/enrollment.py DeviceLogins)."""

    def __init__(self) -> None:
        self.logins: dict[str, str] = {}
        self.fail_add = False

    def check_login_free(self, device_id: str) -> None:
        from control_plane.errors import Conflict

        if device_id in self.logins:
            raise Conflict(f"device id {device_id!r}: the broker already has a login")

    def add_device(self, device_id: str, password: str) -> None:
        self.check_login_free(device_id)
        self.logins[device_id] = password

    def remove_device(self, device_id: str) -> None:
        self.logins.pop(device_id, None)


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture()
def services(tmp_path: Path, clock: Clock, signing_key: Ed25519PrivateKey) -> Iterator[Fleetcast]:
    from cryptography.hazmat.primitives import serialization

    keys = tmp_path / "keys"
    keys.mkdir()
    public = keys / "fleetcast.pub"
    public.write_bytes(
        signing_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    settings = Settings(data_dir=tmp_path / "data", store=":memory:", public_key=public)
    built = build_services(settings, open_repositories(":memory:"), clock)
    try:
        yield built
    finally:
        built.close()


@pytest.fixture()
def package_file(tmp_path: Path, signing_key: Ed25519PrivateKey) -> Path:
    """A signed synthetic package (the model bytes are not a real model: never loaded here)."""
    model = b"not a model, only bytes"
    manifest = make_manifest().model_copy(
        update={"key_id": key_id(signing_key.public_key())}, deep=True
    )
    manifest = manifest.model_copy(
        update={
            "model_file": manifest.model_file.model_copy(
                update={"sha256": hashlib.sha256(model).hexdigest(), "size_bytes": len(model)}
            )
        }
    )
    path = tmp_path / "synthetic.fcpkg"
    path.write_bytes(build_package(manifest, model, signing_key))
    return path


def enroll(services: Fleetcast, device_id: str) -> str:
    """Enroll ``device_id``; its device token."""
    token = services.enrollment.create_token("op", device_id)
    return services.enrollment.enroll(token, device_id, {"os": "linux"}).device_token
