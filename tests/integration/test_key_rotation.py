"""Signing-key rotation under a running fleet, on both transports, with real agents.

The operator rotates with ``fleetcast keys rotate`` (over the REST API); each
agent learns the new key from a ``rotate_key`` command signed by the old one,
acks it, and then installs a package signed by the new key. A rotation message
signed by a key the agent does not trust is refused with the reason in the ack.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from control_plane.cli import cli
from control_plane.compiler.package import build_package
from control_plane.server import ControlPlane, ServeOptions
from control_plane.services.audit import AuditService
from control_plane.services.tokens import Principal, TokenService
from control_plane.settings import Settings as PlaneSettings
from control_plane.signing import PRIVATE_NAME, PUBLIC_NAME, load_private_key
from edge_agent.agent import Agent
from edge_agent.core.keyrotation import KeyRotation, SignedRotation
from edge_agent.package import key_id, read_package
from edge_agent.settings import Settings
from edge_agent.transport.factory import make_transport, save_credentials
from tests.integration.transport_support import enroll_device, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture()
def plane(tmp_path: Path, keys: Any) -> Iterator[ControlPlane]:
    """gRPC, an embedded mosquitto and the REST API; the signing key lives in its key dir."""
    key_dir = tmp_path / "cp" / "keys"
    key_dir.mkdir(parents=True, mode=0o700)
    shutil.copy(keys.private, key_dir / PRIVATE_NAME)
    shutil.copy(keys.public, key_dir / PUBLIC_NAME)
    cp = ControlPlane(
        ServeOptions(
            data_dir=tmp_path / "cp",
            grpc_address="127.0.0.1:0",
            http_address="127.0.0.1:0",
            mqtt=True,
            mqtt_port=0,
        )
    ).start()
    try:
        yield cp
    finally:
        cp.stop()


def _agent(plane: ControlPlane, kind: str, anchor: Path, tmp_path: Path) -> Agent:
    device_id = f"dev-{kind}"
    state = tmp_path / device_id
    save_credentials(state, enroll_device(plane, device_id))
    port = plane.grpc_port if kind == "grpc" else plane.mqtt_port
    settings = Settings(
        state_dir=state, public_key=anchor, device_id=device_id, server=f"{kind}://127.0.0.1:{port}"
    )
    assert settings.server is not None
    agent = Agent(settings, make_transport(settings.server, state))
    agent.start()
    return agent


def _signed_by(package: Path, private_key: Path, release: int, out: Path) -> Path:
    manifest, _, model = read_package(package.read_bytes())
    key = load_private_key(private_key)
    manifest = manifest.model_copy(
        update={
            "release": release,
            "package_id": f"{manifest.package_id}-r{release}",
            "key_id": key_id(key.public_key()),
        }
    )
    out.write_bytes(build_package(manifest, model, key))
    return out


def _run(plane: ControlPlane, command: str, kind: str, body: dict[str, Any]) -> Any:
    services = plane.services
    assert services is not None
    record = services.commands.send(f"dev-{kind}", command, body, "test-operator")
    assert wait_until(lambda: services.commands.get(record.id).status != "pending", 30)
    return services.commands.get(record.id)


def _cli(plane: ControlPlane, tmp_path: Path, *args: str) -> Any:
    assert plane.services is not None
    repos = plane.services.repos
    _, admin = TokenService(repos, AuditService(repos.audit)).create(
        f"admin-{len(args)}-{args[1]}", "admin", Principal("test", "admin")
    )
    env = {
        "FLEETCAST_SERVER": f"http://127.0.0.1:{plane.http_port}",
        "FLEETCAST_TOKEN": admin,
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
    }
    answer = CliRunner().invoke(
        cli, [*args, "--json"], env=env, obj=PlaneSettings(data_dir=tmp_path / "cli")
    )
    assert answer.exit_code == 0, answer.output
    return [json.loads(line) for line in answer.stdout.strip().splitlines()]


@pytest.mark.parametrize("kind", ["grpc", "mqtt"])
def test_rotate_then_a_package_signed_by_the_new_key_installs_and_a_forgery_is_refused(
    plane: ControlPlane, package: Path, keys: Any, tmp_path: Path, kind: str
) -> None:
    services = plane.services
    assert services is not None
    key_dir = tmp_path / "cp" / "keys"
    old_id = key_id(load_private_key(keys.private).public_key())
    agent = _agent(plane, kind, keys.public, tmp_path)
    try:
        old = services.packages.register(package, "test-operator")
        assert _run(plane, "deploy", kind, {"sha256": old.sha256}).status == "ok"

        (rotated,) = _cli(plane, tmp_path, "keys", "rotate")
        new_id = rotated["key_id"]
        assert rotated["previous_key_id"] == old_id != new_id
        # the rotation goes to the device at once: a quick agent may have acked it already
        assert rotated["pending"] + rotated["acked"] == [f"dev-{kind}"]
        assert rotated["failed"] == {}

        def acked() -> bool:
            found = services.commands.list(device_id=f"dev-{kind}", kind="rotate_key").items
            return bool(found) and found[0].status == "ok"

        assert wait_until(acked, 30), services.commands.list(kind="rotate_key").items
        assert new_id in agent.trust.key_ids and old_id in agent.trust.key_ids
        assert (agent.settings.state_dir / "trusted-keys" / f"{new_id}.pub").exists()

        # a package signed by the new key: the control plane and the agent both accept it
        fresh = _signed_by(package, key_dir / PRIVATE_NAME, 2, tmp_path / "new-key.fcpkg")
        registered = services.packages.register(fresh, "test-operator")
        deployed = _run(plane, "deploy", kind, {"sha256": registered.sha256})
        assert deployed.status == "ok", deployed.result
        pointer = agent.installed()[registered.model_name]
        assert pointer.active.sha256 == hashlib.sha256(fresh.read_bytes()).hexdigest()

        # a forged rotation (an intruder's key, or a trusted id over a bad signature): refused
        intruder = Ed25519PrivateKey.generate()
        planted = Ed25519PrivateKey.generate().public_key()
        rotation = KeyRotation(
            key_id=key_id(planted),
            public_key_pem=planted.public_bytes(
                Encoding.PEM, PublicFormat.SubjectPublicKeyInfo
            ).decode(),
            previous_key_id=new_id,
            issued_at=1.0,
        )
        signature = intruder.sign(rotation.signed_bytes()).hex()
        for signed_by, reason in (
            (key_id(intruder.public_key()), "does not trust"),
            (new_id, f"does not verify with key {new_id}"),
        ):
            forged = SignedRotation(rotation=rotation, signed_by=signed_by, signature=signature)
            answer = _run(plane, "rotate_key", kind, forged.command_body())
            assert answer.status == "failed"
            assert reason in answer.result["error"], answer.result
        assert key_id(planted) not in agent.trust.key_ids

        # every device acked: the serve loop retires the old key
        def states() -> dict[str, str]:
            return {k["key_id"]: k["state"] for k in _cli(plane, tmp_path, "keys", "list")}

        assert wait_until(lambda: states().get(old_id) == "retired", 30), states()
        assert states()[new_id] == "current"
        with pytest.raises(Exception, match="signature"):  # no longer trusted for new packages
            services.packages.register(
                _signed_by(package, keys.private, 3, tmp_path / "old-key.fcpkg"), "test-operator"
            )
    finally:
        agent.close()
