"""Read and verify a .fcpkg package.

A package is one zip file with three entries, in this order:

- ``manifest.json``: the canonical JSON of :class:`Manifest`
- ``manifest.sig``: 64-byte ed25519 signature over exactly those bytes
- ``model.onnx`` or ``model.tflite``: the model file the manifest hashes

The package's own address is the sha256 of the whole file. :func:`open_package`
runs every check a device needs before it trusts the bytes, and names the
first one that fails. :func:`open_device_package` runs the same checks and
reads the manifest with the pydantic-free reader
(:mod:`edge_agent.core.device_manifest`): the runtime's path, where a
serverless cold start cannot afford pydantic's import.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Generic, TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_agent.archive import CHUNK, SIGNATURE_BYTES, PackageArchive
from edge_agent.archive import MANIFEST_ENTRY as MANIFEST_ENTRY
from edge_agent.archive import SIGNATURE_ENTRY as SIGNATURE_ENTRY
from edge_agent.core.device_manifest import ManifestFormatError, parse_manifest
from edge_agent.core.host import HostInfo, profile_mismatches
from edge_agent.core.limits import MAX_MANIFEST_BYTES, MAX_MODEL_BYTES, MAX_PACKAGE_BYTES
from edge_agent.errors import IncompatibleProfile, PackageError

if TYPE_CHECKING:
    from edge_agent.core import device_manifest
    from edge_agent.core.device_manifest import AnyManifest
    from edge_agent.core.manifest import Manifest

M = TypeVar("M", "Manifest", "device_manifest.Manifest")


@dataclass(frozen=True)
class Package(Generic[M]):
    """A package whose checks passed; its manifest as the record or the device reads it."""

    manifest: M
    model_bytes: bytes
    sha256: str
    size_bytes: int


TrustedKeys = Ed25519PublicKey | Sequence[Ed25519PublicKey]
"""One signing public key, or several (a device that learned a rotated key trusts both)."""


def model_entry_name(fmt: str) -> str:
    return f"model.{fmt}"


# SubjectPublicKeyInfo of an ed25519 key (RFC 8410): this DER prefix, then the 32 key bytes
_ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")
_PEM_HEAD, _PEM_TAIL = b"-----BEGIN PUBLIC KEY-----", b"-----END PUBLIC KEY-----"


def _raw_ed25519(pem: bytes) -> bytes | None:
    """The 32 key bytes of a PEM ed25519 public key in its one standard encoding, else None."""
    text = pem.strip()
    if not (text.startswith(_PEM_HEAD) and text.endswith(_PEM_TAIL)):
        return None
    try:
        der = base64.b64decode(
            b"".join(text[len(_PEM_HEAD) : -len(_PEM_TAIL)].split()), validate=True
        )
    except (binascii.Error, ValueError):
        return None
    if len(der) != 44 or not der.startswith(_ED25519_SPKI_PREFIX):
        return None
    return der[len(_ED25519_SPKI_PREFIX) :]


def load_public_key(path_or_pem: Path | bytes) -> Ed25519PublicKey:
    pem = path_or_pem.read_bytes() if isinstance(path_or_pem, Path) else path_or_pem
    raw = _raw_ed25519(pem)
    if raw is not None:  # the usual key, without importing cryptography's serialization
        return Ed25519PublicKey.from_public_bytes(raw)
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        key = load_pem_public_key(pem)
    except ValueError as exc:
        raise PackageError("key", f"not a PEM public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise PackageError("key", f"expected an ed25519 public key, got {type(key).__name__}")
    return key


def key_id(public_key: Ed25519PublicKey) -> str:
    """Short stable name of a public key: the first 16 hex digits of its sha256."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def read_package_file(path: Path, limit: int = MAX_PACKAGE_BYTES) -> bytes:
    """A local package file's bytes: a regular file of at most ``limit`` bytes."""
    try:
        with path.open("rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise PackageError("format", f"{path} is not a regular file")
            if info.st_size > limit:
                raise PackageError("format", f"{path} is {info.st_size} bytes (limit {limit})")
            data = handle.read(info.st_size + 1)  # read(n) allocates n bytes up front
    except OSError as exc:
        raise PackageError("format", f"cannot read {path}: {exc.strerror or exc}") from exc
    if len(data) > info.st_size:
        raise PackageError("format", f"{path} grew while it was read")
    return data


def _source(source: Path | bytes) -> tuple[IO[bytes], str, int]:
    """An open handle on the package, its sha256 and its size, hashed in chunks."""
    handle: IO[bytes] = source.open("rb") if isinstance(source, Path) else io.BytesIO(source)
    digest = hashlib.sha256()
    size = 0
    while chunk := handle.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
    handle.seek(0)
    return handle, digest.hexdigest(), size


def _parse_manifest(manifest_bytes: bytes) -> Manifest:
    """The validation of record (pydantic), imported when first needed."""
    from pydantic import ValidationError

    from edge_agent.core.manifest import Manifest

    try:
        manifest = Manifest.from_bytes(manifest_bytes)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "manifest"
        raise PackageError("format", f"manifest field {where}: {first['msg']}") from exc
    try:
        canonical = manifest.canonical_bytes()
    except ValueError as exc:  # NaN or infinity, which canonical JSON cannot hold
        raise PackageError("format", f"manifest.json is not in canonical form: {exc}") from exc
    if canonical != manifest_bytes:
        raise PackageError("format", "manifest.json is not in canonical form")
    return manifest


def _parse_device_manifest(manifest_bytes: bytes) -> device_manifest.Manifest:
    try:
        return parse_manifest(manifest_bytes)
    except ManifestFormatError as exc:
        raise PackageError("format", str(exc)) from exc


def _model_bytes(
    archive: PackageArchive, manifest: AnyManifest, max_model_bytes: int
) -> tuple[bytes, str]:
    entry = model_entry_name(manifest.format)
    if archive.model_entry != entry:
        raise PackageError(
            "format", f"entry {entry!r} is missing (the package holds {archive.model_entry!r})"
        )
    size = manifest.model_file.size_bytes
    if size > max_model_bytes:
        raise PackageError("format", f"model of {size} bytes is over the limit {max_model_bytes}")
    return archive.read_hashed(entry, size)


def read_package(
    data: bytes, *, max_model_bytes: int = MAX_MODEL_BYTES
) -> tuple[Manifest, bytes, bytes]:
    """Split package bytes into (manifest, signature, model bytes); format checks only.

    Nothing here is trusted (the signature is not checked): use it to inspect a
    package, :func:`open_package` to trust one. Memory stays bounded by the caps.
    """
    with PackageArchive(io.BytesIO(data)) as archive:
        manifest_bytes = archive.read(MANIFEST_ENTRY, MAX_MANIFEST_BYTES)
        signature = archive.read(SIGNATURE_ENTRY, SIGNATURE_BYTES)
        manifest = _parse_manifest(manifest_bytes)
        model_bytes, _ = _model_bytes(archive, manifest, max_model_bytes)
    return manifest, signature, model_bytes


def _verify_any(keys: TrustedKeys, signature: bytes, data: bytes) -> None:
    """Pass when one of ``keys`` verifies ``signature`` over ``data``; else name them all."""
    candidates = [keys] if isinstance(keys, Ed25519PublicKey) else list(keys)
    for key in candidates:
        try:
            key.verify(signature, data)
            return
        except InvalidSignature:
            continue
    names = ", ".join(key_id(k) for k in candidates) or "none"
    plural = "s" if len(candidates) != 1 else ""
    raise PackageError("signature", f"manifest signature does not verify with key{plural} {names}")


def open_package(
    source: Path | bytes,
    public_key: TrustedKeys,
    *,
    host: HostInfo | None = None,
    installed_release: int | None = None,
    expected_sha256: str | None = None,
    max_model_bytes: int = MAX_MODEL_BYTES,
) -> Package[Manifest]:
    """Read a package and run every check; raise PackageError naming the first that fails.

    ``public_key`` may be several keys (the device's trusted keys after a
    rotation, ``edge_agent/trust.py``): the signature must verify with one.

    Checks, in order: package hash (when ``expected_sha256`` is given), format
    (exactly the three entries, stored or deflated, sizes under the caps), the
    signature over the manifest bytes (before anything else is inflated or
    parsed), the manifest itself, the model entry's declared and actual size
    against the signed ``size_bytes``, the model hash (streamed), profile (when
    ``host`` is given), release (when ``installed_release`` is given: an older
    release is refused). An unsigned package costs at most the manifest cap to
    refuse, whatever it claims to inflate to.
    """
    return _open(
        source,
        public_key,
        _parse_manifest,
        host=host,
        installed_release=installed_release,
        expected_sha256=expected_sha256,
        max_model_bytes=max_model_bytes,
    )


def open_device_package(
    source: Path | bytes,
    public_key: TrustedKeys,
    *,
    host: HostInfo | None = None,
    installed_release: int | None = None,
    expected_sha256: str | None = None,
    max_model_bytes: int = MAX_MODEL_BYTES,
) -> Package[device_manifest.Manifest]:
    """:func:`open_package`'s checks, in the same order, with the device's manifest reader."""
    return _open(
        source,
        public_key,
        _parse_device_manifest,
        host=host,
        installed_release=installed_release,
        expected_sha256=expected_sha256,
        max_model_bytes=max_model_bytes,
    )


def _open(
    source: Path | bytes,
    public_key: TrustedKeys,
    parse: Callable[[bytes], M],
    *,
    host: HostInfo | None,
    installed_release: int | None,
    expected_sha256: str | None,
    max_model_bytes: int,
) -> Package[M]:
    try:
        handle, digest, size = _source(source)
    except OSError as exc:
        raise PackageError("format", f"cannot read the package: {exc}") from exc
    with handle:
        if expected_sha256 is not None and digest != expected_sha256:
            raise PackageError("hash", f"package sha256 {digest} != expected {expected_sha256}")
        with PackageArchive(handle) as archive:
            manifest_bytes = archive.read(MANIFEST_ENTRY, MAX_MANIFEST_BYTES)
            signature = archive.read(SIGNATURE_ENTRY, SIGNATURE_BYTES)
            _verify_any(public_key, signature, manifest_bytes)
            manifest = parse(manifest_bytes)
            model_bytes, model_digest = _model_bytes(archive, manifest, max_model_bytes)
    if model_digest != manifest.model_file.sha256:
        raise PackageError(
            "hash", f"model sha256 {model_digest} != manifest {manifest.model_file.sha256}"
        )
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
    return Package(manifest=manifest, model_bytes=model_bytes, sha256=digest, size_bytes=size)
