"""Write signed .fcpkg packages: deterministic zip bytes, atomic file writes."""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import zipfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.core.manifest import Manifest
from edge_agent.package import MANIFEST_ENTRY, SIGNATURE_ENTRY, model_entry_name

_EPOCH = (1980, 1, 1, 0, 0, 0)


def _entry(archive: zipfile.ZipFile, name: str, data: bytes, compress: bool) -> None:
    info = zipfile.ZipInfo(name, date_time=_EPOCH)
    info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    archive.writestr(info, data)


def build_package(manifest: Manifest, model_bytes: bytes, key: Ed25519PrivateKey) -> bytes:
    """Package bytes: manifest, its signature, the model (fixed order and timestamps)."""
    if hashlib.sha256(model_bytes).hexdigest() != manifest.model_file.sha256:
        raise ValueError("manifest does not describe these model bytes")
    manifest_bytes = manifest.canonical_bytes()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        _entry(archive, MANIFEST_ENTRY, manifest_bytes, compress=True)
        _entry(archive, SIGNATURE_ENTRY, key.sign(manifest_bytes), compress=False)
        _entry(archive, model_entry_name(manifest.format), model_bytes, compress=True)
    return buffer.getvalue()


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def package_filename(manifest: Manifest) -> str:
    return f"{manifest.package_id}.fcpkg"
