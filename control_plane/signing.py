"""ed25519 signing keys for packages (cryptography)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
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


def write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to a new ``mode`` file beside ``path``, then rename it over ``path``.

    The old file's mode is not kept and a symlink at ``path`` is replaced, never followed.
    """
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def generate_keypair(directory: Path, overwrite: bool = False) -> tuple[Path, Path]:
    """Write a new key pair (PEM) into ``directory``; the private key is mode 0600."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    private_path, public_path = directory / PRIVATE_NAME, directory / PUBLIC_NAME
    if (private_path.exists() or private_path.is_symlink()) and not overwrite:
        raise Conflict(f"{private_path} exists; pass --force to replace it")
    key = Ed25519PrivateKey.generate()
    write_private(
        private_path, key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    )
    public = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    write_private(public_path, public, mode=0o644)
    return private_path, public_path


def load_fleet_public_key(path: Path, required: bool = True) -> Ed25519PublicKey | None:
    """The package signing public key at ``path``; None if missing and not ``required``.

    Raises InvalidInput naming the file and the fix, never a bare FileNotFoundError.
    """
    from edge_agent.errors import PackageError
    from edge_agent.package import load_public_key

    if not path.exists():
        if not required:
            return None
        raise InvalidInput(f"public key {path}: no such file (run `fleetcast keys generate`)")
    try:
        return load_public_key(path)
    except PackageError as exc:
        raise InvalidInput(f"public key {path}: {exc}") from exc


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
