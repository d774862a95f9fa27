"""ed25519 signing keys for packages (cryptography)."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)

from control_plane.errors import Conflict, InvalidInput

PRIVATE_NAME = "fleetcast.key"
PUBLIC_NAME = "fleetcast.pub"


def generate_keypair(directory: Path, overwrite: bool = False) -> tuple[Path, Path]:
    """Write a new key pair (PEM) into ``directory``; the private key is mode 0600."""
    directory.mkdir(parents=True, exist_ok=True)
    private_path, public_path = directory / PRIVATE_NAME, directory / PUBLIC_NAME
    if private_path.exists() and not overwrite:
        raise Conflict(f"{private_path} exists; pass --force to replace it")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    public_path.write_bytes(
        key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    return private_path, public_path


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise InvalidInput(
            f"signing key {path}: no such file (run `fleetcast keys generate`)"
        ) from exc
    except (ValueError, TypeError) as exc:
        raise InvalidInput(
            f"signing key {path}: not an unencrypted PEM private key ({exc})"
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise InvalidInput(f"signing key {path}: expected ed25519, got {type(key).__name__}")
    return key
