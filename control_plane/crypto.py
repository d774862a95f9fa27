"""Encryption at rest for captured samples: AES-256-GCM with associated data.

The key is 32 random bytes in ``<data dir>/keys/samples.key``, created with
mode 0600 (by ``fleetcast admin init``, or on first use) and refused when
others can read it; ``FLEETCAST_SAMPLES_KEY`` (64 hex digits) or
``FLEETCAST_SAMPLES_KEY_FILE`` replace it. A sealed value is
``version (1 byte) | nonce (12) | ciphertext+tag``; the associated data (for
example ``device_id/prediction_id``) binds it to its record, so a sample moved
to another row does not decrypt.

A :class:`SampleKeyring` seals with the current key and opens with any key it
holds, by key id (stored on every row): retired keys wait in
``keys/samples.d/<key id>.key`` (:func:`rotate_sample_key` moves the current
one there and makes a new one), so rows sealed before a rotation still open.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from control_plane.errors import InvalidInput

logger = logging.getLogger(__name__)

KEY_NAME = "samples.key"
OLD_KEYS_DIR = "samples.d"
KEY_BYTES = 32
NONCE_BYTES = 12
VERSION = b"\x01"


def load_or_create_key(key_dir: Path, path: Path | None = None) -> bytes:
    """The sample key in ``key_dir`` (made 0600 if missing); refused if group/others can read."""
    path = path or key_dir / KEY_NAME
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "wb") as out:
            out.write(secrets.token_bytes(KEY_BYTES))
    return _read_key(path)


def _read_key(path: Path) -> bytes:
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


def sample_key_id(key: bytes) -> str:
    """A key's stable name (16 hex digits); a hash of a derived value, never the key itself."""
    return hashlib.sha256(b"fleetcast-samples-key-id:" + key).hexdigest()[:16]


class SampleKeyring:
    """The current sample key (it seals) and the older ones (they still open), by key id."""

    def __init__(self, current: bytes, older: Iterable[bytes] = ()) -> None:
        self.current_id = sample_key_id(current)
        self._ciphers: dict[str, SampleCipher] = {
            sample_key_id(k): SampleCipher(k) for k in (*older, current)
        }

    @classmethod
    def ephemeral(cls) -> SampleKeyring:
        """A random key held in memory only (unit tests and ``:memory:`` stores)."""
        return cls(secrets.token_bytes(KEY_BYTES))

    @property
    def key_ids(self) -> list[str]:
        return sorted(self._ciphers)

    def seal(self, plaintext: bytes, associated_data: bytes) -> tuple[str, bytes]:
        """(the current key's id, the sealed bytes)."""
        return self.current_id, self._ciphers[self.current_id].encrypt(plaintext, associated_data)

    def open(self, key_id: str, sealed: bytes, associated_data: bytes) -> bytes:
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise InvalidInput(
                f"captured sample sealed with key {key_id}, which this control plane does not "
                f"hold (it holds {', '.join(self.key_ids)}): put that key in keys/{OLD_KEYS_DIR}/"
            )
        return cipher.decrypt(sealed, associated_data)


def _hex_key(value: str) -> bytes:
    try:
        key = bytes.fromhex(value.strip())
    except ValueError:
        raise InvalidInput("FLEETCAST_SAMPLES_KEY: expected 64 hex digits") from None
    if len(key) != KEY_BYTES:
        raise InvalidInput(f"FLEETCAST_SAMPLES_KEY: {len(key)} bytes, expected {KEY_BYTES}")
    return key


def load_sample_keyring(
    key_dir: Path, environ: Mapping[str, str] = os.environ, key_file: Path | None = None
) -> SampleKeyring:
    """The keyring of a data directory: the current key from ``FLEETCAST_SAMPLES_KEY`` (hex),
    else ``key_file`` / ``FLEETCAST_SAMPLES_KEY_FILE``, else ``<key_dir>/samples.key`` (made
    0600 when missing); older keys from ``<key_dir>/samples.d/*.key``."""
    if environ.get("FLEETCAST_SAMPLES_KEY"):
        current = _hex_key(environ["FLEETCAST_SAMPLES_KEY"])
    else:
        given = key_file or (
            Path(environ["FLEETCAST_SAMPLES_KEY_FILE"])
            if environ.get("FLEETCAST_SAMPLES_KEY_FILE")
            else None
        )
        current = _read_key(given) if given else load_or_create_key(key_dir)
    old_dir = key_dir / OLD_KEYS_DIR
    older = [_read_key(p) for p in sorted(old_dir.glob("*.key"))] if old_dir.is_dir() else []
    return SampleKeyring(current, older)


def rotate_sample_key(key_dir: Path) -> tuple[str, str]:
    """Move ``samples.key`` to ``samples.d/<id>.key`` and make a new one: (old id, new id).

    Rows sealed before keep their key id and open with the moved key; a running
    ``fleetcast serve`` seals with the new key after its restart.
    """
    old = load_or_create_key(key_dir)
    old_id = sample_key_id(old)
    old_dir = key_dir / OLD_KEYS_DIR
    old_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.replace(key_dir / KEY_NAME, old_dir / f"{old_id}.key")
    new_id = sample_key_id(load_or_create_key(key_dir))
    logger.info("sample key %s retired to %s; new key %s", old_id, old_dir, new_id)
    return old_id, new_id
