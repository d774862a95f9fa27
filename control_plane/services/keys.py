"""Package signing keys: rotation under a running fleet, its progress, retirement.

Files in ``<data dir>/keys`` (the store holds no key material):

- ``fleetcast.key`` / ``fleetcast.pub``: the *current* key; compile jobs sign with it;
- ``previous/<id>.key|.pub|.json``: keys replaced by a rotation and still trusted
  (packages signed with them still register and install), with the rotation
  message that replaced them (``.json``);
- ``retired/<id>.…``: keys no longer trusted by the control plane.

:meth:`KeyService.rotate` makes a new key, signs a
:class:`~edge_agent.core.keyrotation.KeyRotation` with the *old* private key and
queues a ``rotate_key`` command to every active device (one per device, by
execution key): each agent trusts the new key once it checked the old key's
signature, and acks. :meth:`KeyService.retire_acked` (the ticker of ``fleetcast
serve``) retires a previous key once every device
enrolled before the rotation acked it (reads never retire anything);
:meth:`KeyService.retire` does it on an
operator's word (refused, naming the devices not done, unless ``force``).
"""

from __future__ import annotations

import builtins
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from control_plane.errors import Conflict, ControlPlaneError, InvalidInput, NotFound
from control_plane.services import Clock
from control_plane.services.audit import AuditService
from control_plane.services.commands import CommandService
from control_plane.services.tokens import Principal
from control_plane.signing import PRIVATE_NAME, PUBLIC_NAME, load_private_key, write_private
from control_plane.store.records import MAX_LIMIT, Command, Device
from control_plane.store.repos import Repositories
from edge_agent.core.keyrotation import COMMAND_KIND, KeyRotation, SignedRotation
from edge_agent.errors import PackageError
from edge_agent.package import key_id, load_public_key

logger = logging.getLogger(__name__)

PREVIOUS, RETIRED = "previous", "retired"
SYSTEM = "keys"  # the actor of automatic retirements


@dataclass(frozen=True)
class RotationProgress:
    key_id: str  # the new key
    previous_key_id: str
    issued_at: float
    acked: list[str]
    failed: dict[str, str]  # device -> the agent's reason
    pending: list[str]

    @property
    def done(self) -> bool:
        return not self.failed and not self.pending

    def view(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "previous_key_id": self.previous_key_id,
            "issued_at": self.issued_at,
            "acked": self.acked,
            "failed": self.failed,
            "pending": self.pending,
        }


def _pem(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


class KeyService:
    def __init__(
        self,
        repos: Repositories,
        audit: AuditService,
        commands: CommandService,
        key_dir: Path,
        clock: Clock = time.time,
    ) -> None:
        self.repos = repos
        self.audit = audit
        self.commands = commands
        self.key_dir = key_dir
        self.clock = clock

    # -- reading

    def current_key_id(self) -> str | None:
        """The current key's id; None before `fleetcast keys generate`."""
        path = self.key_dir / PUBLIC_NAME
        return key_id(self._public(path)) if path.exists() else None

    def trusted_public_keys(self) -> builtins.list[Ed25519PublicKey]:
        """The current key and the previous (not retired) ones: packages signed by any register."""
        keys: builtins.list[Ed25519PublicKey] = []
        current = self.key_dir / PUBLIC_NAME
        if current.exists():
            keys.append(self._public(current))
        folder = self.key_dir / PREVIOUS
        if folder.is_dir():
            keys += [self._public(p) for p in sorted(folder.glob("*.pub"))]
        return keys

    def list(self) -> builtins.list[dict[str, Any]]:
        """Every key: id, state (current / previous / retired) and its rotation's progress."""
        rows: builtins.list[dict[str, Any]] = []
        current = self.current_key_id()
        if current is not None:
            rows.append({"key_id": current, "state": "current", "rotation": None})
        for state in (PREVIOUS, RETIRED):
            folder = self.key_dir / state
            for pub in sorted(folder.glob("*.pub")) if folder.is_dir() else []:
                progress = self.progress_of(pub.stem, state)
                rows.append(
                    {
                        "key_id": pub.stem,
                        "state": state,
                        "rotation": progress.view() if progress else None,
                    }
                )
        return rows

    def progress_of(self, old_id: str, state: str = PREVIOUS) -> RotationProgress | None:
        """How far the rotation that replaced key ``old_id`` got across the fleet."""
        message = self.key_dir / state / f"{old_id}.json"
        if not message.exists():
            return None
        signed = SignedRotation.model_validate_json(message.read_text())
        return self._progress(signed.rotation)

    # -- rotating

    def rotate(self, actor: Principal, *, retire_previous: bool = False) -> RotationProgress:
        """A new current key, announced to every active device under the old key's signature."""
        old_private = load_private_key(self.key_dir / PRIVATE_NAME)
        old_public = old_private.public_key()
        old_id = key_id(old_public)
        new_private = Ed25519PrivateKey.generate()
        new_id = key_id(new_private.public_key())
        rotation = KeyRotation(
            key_id=new_id,
            public_key_pem=_pem(new_private.public_key()).decode(),
            previous_key_id=old_id,
            issued_at=self.clock(),
        )
        signed = SignedRotation(
            rotation=rotation,
            signed_by=old_id,
            signature=old_private.sign(rotation.signed_bytes()).hex(),
        )
        self._archive(old_private, signed)  # first: a crash here leaves the old key current
        write_private(
            self.key_dir / PRIVATE_NAME,
            new_private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()),
        )
        write_private(self.key_dir / PUBLIC_NAME, _pem(new_private.public_key()), mode=0o644)
        sent = 0
        for device in self._active_devices():
            try:
                self.commands.send(
                    device.id,
                    COMMAND_KIND,
                    signed.command_body(),
                    actor.name,
                    execution_key=f"rotate_key:{new_id}:{device.id}",
                )
                sent += 1
            except ControlPlaneError as exc:  # revoked meanwhile: it counts as pending
                logger.warning("key rotation to %s not queued: %s", device.id, exc)
        self.audit.record(
            actor.name,
            "key.rotate",
            f"key:{new_id}",
            before={"current": old_id},
            after={"current": new_id, "devices": sent},
        )
        if retire_previous:
            self.retire(old_id, actor, force=True)
        progress = self.progress_of(old_id, RETIRED if retire_previous else PREVIOUS)
        assert progress is not None
        return progress

    # -- retiring

    def retire(self, old_id: str, actor: Principal, *, force: bool = False) -> dict[str, Any]:
        """Stop trusting a previous key: refused (naming the devices) until all acked, or force."""
        folder = self.key_dir / PREVIOUS
        if not (folder / f"{old_id}.pub").exists():
            if old_id == self.current_key_id():
                raise Conflict(f"key {old_id} is the current key: rotate it first")
            raise NotFound(f"no previous signing key {old_id} (see `fleetcast keys list`)")
        progress = self.progress_of(old_id)
        if progress is not None and not progress.done and not force:
            raise Conflict(
                f"key {old_id} is still needed: devices that have not acked the rotation to "
                f"{progress.key_id}: {', '.join(progress.pending) or '-'}; failed: "
                + (", ".join(f"{d} ({why})" for d, why in progress.failed.items()) or "-")
                + " (retire it anyway with force)"
            )
        retired = self.key_dir / RETIRED
        retired.mkdir(mode=0o700, exist_ok=True)
        for path in folder.glob(f"{old_id}.*"):
            os.replace(path, retired / path.name)
        view = progress.view() if progress else {}
        self.audit.record(
            actor.name,
            "key.retire",
            f"key:{old_id}",
            before={"state": PREVIOUS},
            after={"state": RETIRED},
            detail={"forced": force, "pending": view.get("pending"), "failed": view.get("failed")},
        )
        return {"key_id": old_id, "state": RETIRED, "rotation": view or None}

    def retire_acked(self) -> builtins.list[str]:
        """Retire every previous key whose rotation every device acked; their ids."""
        folder = self.key_dir / PREVIOUS
        done: builtins.list[str] = []
        for pub in sorted(folder.glob("*.pub")) if folder.is_dir() else []:
            progress = self.progress_of(pub.stem)
            if progress is not None and progress.done:
                self.retire(pub.stem, Principal(SYSTEM, "admin"))
                done.append(pub.stem)
        return done

    # -- internals

    def _public(self, path: Path) -> Ed25519PublicKey:
        try:
            return load_public_key(path)
        except PackageError as exc:
            raise InvalidInput(f"signing key {path}: {exc.detail}") from exc

    def _archive(self, old: Ed25519PrivateKey, signed: SignedRotation) -> None:
        folder = self.key_dir / PREVIOUS
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        name = signed.signed_by
        private = old.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        write_private(folder / f"{name}.key", private)
        write_private(folder / f"{name}.pub", _pem(old.public_key()), mode=0o644)
        write_private(folder / f"{name}.json", signed.model_dump_json().encode(), mode=0o644)

    def _active_devices(self) -> builtins.list[Device]:
        devices: builtins.list[Device] = []
        offset: int | None = 0
        while offset is not None:
            page = self.repos.devices.list(status="active", limit=MAX_LIMIT, offset=offset)
            devices += page.items
            offset = page.next_offset
        return devices

    def _commands(self, new_id: str) -> dict[str, Command]:
        """The newest ``rotate_key`` command of each device for the rotation to ``new_id``."""
        found: dict[str, Command] = {}
        offset: int | None = 0
        while offset is not None:
            page = self.repos.commands.list(kind=COMMAND_KIND, limit=MAX_LIMIT, offset=offset)
            for command in page.items:
                if command.body.get("rotation", {}).get("key_id") == new_id:
                    found[command.device_id] = command
            offset = page.next_offset
        return found

    def _progress(self, rotation: KeyRotation) -> RotationProgress:
        commands = self._commands(rotation.key_id)
        acked: builtins.list[str] = []
        failed: dict[str, str] = {}
        pending: builtins.list[str] = []
        for device in self._active_devices():
            command = commands.get(device.id)
            if command is None and device.enrolled_at > rotation.issued_at:
                continue  # enrolled after the rotation: installed with the new key
            if command is not None and command.status == "ok":
                acked.append(device.id)
            elif command is not None and command.status == "failed":
                failed[device.id] = str((command.result or {}).get("error", "failed"))
            else:
                pending.append(device.id)
        return RotationProgress(
            rotation.key_id, rotation.previous_key_id, rotation.issued_at, acked, failed, pending
        )
