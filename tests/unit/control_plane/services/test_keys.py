"""Signing-key rotation in the services, and the agent's trust store, without a network."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Clock
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from control_plane.app import Fleetcast, build_services
from control_plane.errors import Conflict, NotFound
from control_plane.services.tokens import Principal
from control_plane.settings import Settings
from control_plane.signing import generate_keypair, load_private_key
from control_plane.store.factory import open_repositories
from control_plane.store.records import NewDevice
from edge_agent.core.keyrotation import KeyRotationRefused
from edge_agent.package import key_id, load_public_key
from edge_agent.trust import TrustStore

ADMIN = Principal("root", "admin")


@pytest.fixture()
def fleet(tmp_path: Path, clock: Clock) -> Fleetcast:
    settings = Settings(data_dir=tmp_path / "data", store=":memory:")
    generate_keypair(settings.key_dir)
    built = build_services(settings, open_repositories(":memory:"), clock)
    for device in ("cam-1", "cam-2"):
        built.repos.devices.add(NewDevice(device, "h"), at=clock.now - 10)
    return built


def _ack(fleet: Fleetcast, device: str, ok: bool, error: str = "") -> None:
    (command,) = fleet.commands.list(device_id=device, kind="rotate_key").items
    fleet.commands.ack(device, command.id, ok, {"error": error})


def test_rotation_queues_one_signed_message_per_device_and_retires_after_every_ack(
    fleet: Fleetcast, tmp_path: Path, clock: Clock
) -> None:
    keys = fleet.keys
    old_id = keys.current_key_id()
    clock.now += 5
    progress = keys.rotate(ADMIN)
    assert progress.previous_key_id == old_id != progress.key_id == keys.current_key_id()
    assert progress.pending == ["cam-1", "cam-2"]
    assert len(keys.trusted_public_keys()) == 2  # old packages still register
    previous = keys.key_dir / "previous"
    assert (previous / f"{old_id}.key").stat().st_mode & 0o777 == 0o600
    # the agent side accepts what the control plane sent: signed by the old key
    agent_state = tmp_path / "agent"
    trust = TrustStore(load_public_key(previous / f"{old_id}.pub"), agent_state)
    (command,) = fleet.commands.list(device_id="cam-1", kind="rotate_key").items
    assert trust.accept_rotation(command.body) == progress.key_id
    assert TrustStore(trust[0], agent_state).key_ids == sorted([old_id, progress.key_id])

    _ack(fleet, "cam-1", True)
    _ack(fleet, "cam-2", False, "key rotation refused: signed by key x")
    with pytest.raises(Conflict, match=r"failed: cam-2 \(key rotation refused"):
        keys.retire(old_id, ADMIN)
    assert keys.retire_acked() == []  # a failure is not an ack
    fleet.repos.devices.add(NewDevice("late", "h"), at=clock.now + 1)  # enrolled with the new key
    progress = keys.progress_of(old_id)
    assert progress is not None and "late" not in progress.pending + progress.acked

    retired = keys.retire(old_id, ADMIN, force=True)
    assert retired["state"] == "retired"
    assert [k["state"] for k in keys.list()] == ["current", "retired"]
    assert len(keys.trusted_public_keys()) == 1
    entry = fleet.repos.audit.list(action="key.retire").items[0]
    assert entry.actor == "root" and entry.detail["forced"] is True
    with pytest.raises(NotFound):
        keys.retire(old_id, ADMIN)
    with pytest.raises(Conflict, match="current key"):
        keys.retire(keys.current_key_id(), ADMIN)


def test_every_ack_retires_the_old_key_automatically(fleet: Fleetcast) -> None:
    old_id = fleet.keys.current_key_id()
    fleet.keys.rotate(ADMIN)
    _ack(fleet, "cam-1", True)
    assert fleet.keys.retire_acked() == []  # cam-2 has not answered
    _ack(fleet, "cam-2", True)
    assert fleet.keys.retire_acked() == [old_id]
    assert fleet.repos.audit.list(action="key.retire").items[0].actor == "keys"


def test_the_trust_store_refuses_what_a_trusted_key_did_not_sign(
    fleet: Fleetcast, tmp_path: Path
) -> None:
    anchor_private = load_private_key(fleet.keys.key_dir / "fleetcast.key")
    fleet.keys.rotate(ADMIN)
    (command,) = fleet.commands.list(device_id="cam-1", kind="rotate_key").items
    stranger = TrustStore(Ed25519PrivateKey.generate().public_key(), tmp_path / "other")
    with pytest.raises(KeyRotationRefused, match="does not trust"):
        stranger.accept_rotation(command.body)
    trust = TrustStore(anchor_private.public_key(), tmp_path / "agent")
    body = dict(command.body)
    body["rotation"] = {**body["rotation"], "issued_at": 2.0}  # altered after signing
    with pytest.raises(KeyRotationRefused, match="does not verify"):
        trust.accept_rotation(body)
    with pytest.raises(KeyRotationRefused, match="field signature"):
        trust.accept_rotation({**command.body, "signature": "zz"})
    assert trust.key_ids == [key_id(anchor_private.public_key())]  # nothing learned
