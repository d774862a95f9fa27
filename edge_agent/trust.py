"""The signing keys a device trusts: the one it was installed with, and those it learned.

The first key is ``settings.public_key`` (the trust anchor, never changed
here). A ``rotate_key`` command (``edge_agent/core/keyrotation.py``) adds a key
when a key already trusted signed it; learned keys are kept as
``<state>/trusted-keys/<key id>.pub`` (written whole, then renamed), so they
survive restarts. A :class:`TrustStore` is a sequence of public keys: the
installer verifies package signatures with any of them.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, overload

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_agent.core.keyrotation import KeyRotationRefused, parse_rotation
from edge_agent.errors import PackageError
from edge_agent.package import key_id, load_public_key

logger = logging.getLogger(__name__)

DIRECTORY = "trusted-keys"


class TrustStore(Sequence[Ed25519PublicKey]):
    def __init__(self, anchor: Ed25519PublicKey, state_dir: Path) -> None:
        self.directory = state_dir / DIRECTORY
        self._keys: dict[str, Ed25519PublicKey] = {key_id(anchor): anchor}
        if self.directory.is_dir():
            for path in sorted(self.directory.glob("*.pub")):
                try:
                    learned = load_public_key(path)
                except PackageError as exc:  # a damaged file: skip it, say so
                    logger.error("trusted key %s is unreadable, ignored: %s", path, exc)
                    continue
                self._keys[key_id(learned)] = learned

    @overload
    def __getitem__(self, index: int) -> Ed25519PublicKey: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Ed25519PublicKey]: ...
    def __getitem__(self, index: int | slice) -> Any:
        return list(self._keys.values())[index]

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def key_ids(self) -> list[str]:
        return sorted(self._keys)

    def accept_rotation(self, body: Any) -> str:
        """Trust the key a rotation message carries; its id. KeyRotationRefused saying why."""
        signed = parse_rotation(body)
        rotation = signed.rotation
        signer = self._keys.get(signed.signed_by)
        if signer is None:
            raise KeyRotationRefused(
                f"key rotation refused: signed by key {signed.signed_by}, which this device "
                f"does not trust (trusted: {', '.join(self.key_ids)})"
            )
        try:
            signer.verify(bytes.fromhex(signed.signature), rotation.signed_bytes())
        except InvalidSignature:
            raise KeyRotationRefused(
                f"key rotation refused: the signature does not verify with key {signed.signed_by}"
            ) from None
        try:
            new_key = load_public_key(rotation.public_key_pem.encode())
        except PackageError as exc:
            raise KeyRotationRefused(f"key rotation refused: the new key: {exc.detail}") from None
        if key_id(new_key) != rotation.key_id:
            raise KeyRotationRefused(
                f"key rotation refused: the new key's id is {key_id(new_key)}, "
                f"the message says {rotation.key_id}"
            )
        if rotation.key_id not in self._keys:
            self._write(rotation.key_id, rotation.public_key_pem.encode())
            self._keys[rotation.key_id] = new_key
            logger.info(
                "now trusting signing key %s (signed by %s)", rotation.key_id, signed.signed_by
            )
        return rotation.key_id

    def _write(self, name: str, pem: bytes) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, temp = tempfile.mkstemp(prefix=f".{name}.", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(pem)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, self.directory / f"{name}.pub")
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
