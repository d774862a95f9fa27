"""Encryption at rest for captured samples: AES-256-GCM with associated data.

The key is 32 random bytes in ``<data dir>/keys/samples.key``, created with
mode 0600 on first use and refused when others can read it. A sealed value is
``version (1 byte) | nonce (12) | ciphertext+tag``; the associated data (for
example ``device_id/seq``) binds it to its record, so a sample moved to another
row does not decrypt.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from control_plane.errors import InvalidInput

KEY_NAME = "samples.key"
KEY_BYTES = 32
NONCE_BYTES = 12
VERSION = b"\x01"


def load_or_create_key(key_dir: Path) -> bytes:
    """The sample key in ``key_dir`` (made 0600 if missing); refused if group/others can read."""
    path = key_dir / KEY_NAME
    key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "wb") as out:
            out.write(secrets.token_bytes(KEY_BYTES))
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise InvalidInput(f"{path}: mode {mode:o} lets others read the key; chmod 600 it")
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        raise InvalidInput(f"{path}: {len(key)} bytes, expected a {KEY_BYTES}-byte AES key")
    return key


class SampleCipher:
    """Seal and open sample bodies with one key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise InvalidInput(f"AES-256-GCM needs a {KEY_BYTES}-byte key, got {len(key)}")
        self._aead = AESGCM(key)

    @classmethod
    def from_key_dir(cls, key_dir: Path) -> SampleCipher:
        return cls(load_or_create_key(key_dir))

    def encrypt(self, plaintext: bytes, associated_data: bytes) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)  # random 96-bit nonces: fine far past 2^32 seals
        return VERSION + nonce + self._aead.encrypt(nonce, plaintext, associated_data)

    def decrypt(self, sealed: bytes, associated_data: bytes) -> bytes:
        if len(sealed) < 1 + NONCE_BYTES + 16 or sealed[:1] != VERSION:
            raise InvalidInput("not a sealed sample (wrong version byte or too short)")
        nonce, body = sealed[1 : 1 + NONCE_BYTES], sealed[1 + NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, body, associated_data)
        except InvalidTag:
            raise InvalidInput(
                "sample does not decrypt: another key, altered bytes, or another record's data"
            ) from None
