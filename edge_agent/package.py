"""Read and verify a .fcpkg package.

A package is one zip file with three entries, in this order:

- ``manifest.json``: the canonical JSON of :class:`Manifest`
- ``manifest.sig``: 64-byte ed25519 signature over exactly those bytes
- ``model.onnx`` or ``model.tflite``: the model file the manifest hashes

The package's own address is the sha256 of the whole file. :func:`open_package`
runs every check a device needs before it trusts the bytes, and names the
first one that fails.
"""

from __future__ import annotations

import hashlib
import io
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_public_key
from pydantic import ValidationError

from edge_agent.core.host import HostInfo, profile_mismatches
from edge_agent.core.manifest import Manifest
from edge_agent.errors import IncompatibleProfile, PackageError

logger = logging.getLogger(__name__)

MANIFEST_ENTRY = "manifest.json"
SIGNATURE_ENTRY = "manifest.sig"
MAX_MANIFEST_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Package:
    """A package whose checks passed."""

    manifest: Manifest
    model_bytes: bytes
    sha256: str
    size_bytes: int


def model_entry_name(fmt: str) -> str:
    return f"model.{fmt}"


def load_public_key(path_or_pem: Path | bytes) -> Ed25519PublicKey:
    pem = path_or_pem.read_bytes() if isinstance(path_or_pem, Path) else path_or_pem
    try:
        key = load_pem_public_key(pem)
    except ValueError as exc:
        raise PackageError("key", f"not a PEM public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise PackageError("key", f"expected an ed25519 public key, got {type(key).__name__}")
    return key


def key_id(public_key: Ed25519PublicKey) -> str:
    """Short stable name of a public key: the first 16 hex digits of its sha256."""
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def read_package(data: bytes) -> tuple[Manifest, bytes, bytes]:
    """Split package bytes into (manifest, signature, model bytes); format check only."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise PackageError("format", f"not a .fcpkg (zip) file: {exc}") from exc
    with archive:
        names = archive.namelist()
        for required in (MANIFEST_ENTRY, SIGNATURE_ENTRY):
            if required not in names:
                raise PackageError("format", f"entry {required!r} is missing")
        info = archive.getinfo(MANIFEST_ENTRY)
        if info.file_size > MAX_MANIFEST_BYTES:
            raise PackageError("format", f"manifest is {info.file_size} bytes, over the limit")
        try:
            manifest_bytes = archive.read(MANIFEST_ENTRY)
            signature = archive.read(SIGNATURE_ENTRY)
        except (zipfile.BadZipFile, OSError) as exc:  # CRC mismatch, truncated data
            raise PackageError("format", f"corrupt archive: {exc}") from exc
        try:
            manifest = Manifest.from_bytes(manifest_bytes)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "manifest"
            raise PackageError("format", f"manifest field {where}: {first['msg']}") from exc
        if manifest.canonical_bytes() != manifest_bytes:
            raise PackageError("format", "manifest.json is not in canonical form")
        entry = model_entry_name(manifest.format)
        if entry not in names:
            raise PackageError("format", f"entry {entry!r} is missing")
        try:
            model_bytes = archive.read(entry)
        except (zipfile.BadZipFile, OSError) as exc:
            raise PackageError("format", f"corrupt model entry: {exc}") from exc
    return manifest, signature, model_bytes


def open_package(
    source: Path | bytes,
    public_key: Ed25519PublicKey,
    *,
    host: HostInfo | None = None,
    installed_release: int | None = None,
    expected_sha256: str | None = None,
) -> Package:
    """Read a package and run every check; raise PackageError naming the first that fails.

    Checks, in order: format, package hash (when ``expected_sha256`` is given),
    model hash, signature, profile (when ``host`` is given), release (when
    ``installed_release`` is given: an older release is refused).
    """
    data = source.read_bytes() if isinstance(source, Path) else source
    digest = hashlib.sha256(data).hexdigest()
    if expected_sha256 is not None and digest != expected_sha256:
        raise PackageError("hash", f"package sha256 {digest} != expected {expected_sha256}")
    manifest, signature, model_bytes = read_package(data)
    model_digest = hashlib.sha256(model_bytes).hexdigest()
    if model_digest != manifest.model_file.sha256:
        raise PackageError(
            "hash", f"model sha256 {model_digest} != manifest {manifest.model_file.sha256}"
        )
    try:
        public_key.verify(signature, manifest.canonical_bytes())
    except InvalidSignature as exc:
        raise PackageError(
            "signature", f"manifest signature does not verify with key {key_id(public_key)}"
        ) from exc
    if host is not None:
        problems = profile_mismatches(manifest.profile, host, manifest.runtime)
        if problems:
            raise IncompatibleProfile(
                f"package is for profile {manifest.profile.id!r}: {'; '.join(problems)}"
            )
    if installed_release is not None and manifest.release < installed_release:
        raise PackageError(
            "release",
            f"release {manifest.release} is older than installed release {installed_release}",
        )
    return Package(manifest=manifest, model_bytes=model_bytes, sha256=digest, size_bytes=len(data))
