"""Read the zip container of a .fcpkg defensively: bounded memory, no surprises.

A package is exactly three entries (``manifest.json``, ``manifest.sig``,
``model.onnx`` or ``model.tflite``), stored or deflated, never encrypted. This
module refuses anything else before a byte is inflated, and reads an entry only
up to the size its header declares (which the caller has compared with a cap,
or with the signed manifest), in chunks. Every failure of the zip layer
(``BadZipFile``, ``zlib.error``, ``NotImplementedError`` for an unknown method,
``RuntimeError`` for an encrypted entry, truncation) becomes
``PackageError("format", ...)`` naming the entry and the problem.
"""

from __future__ import annotations

import hashlib
import logging
import struct
import zipfile
import zlib
from collections.abc import Iterator
from typing import IO

from edge_agent.errors import PackageError

logger = logging.getLogger(__name__)

MANIFEST_ENTRY = "manifest.json"
SIGNATURE_ENTRY = "manifest.sig"
MODEL_ENTRIES = ("model.onnx", "model.tflite")
ENTRY_COUNT = 3
SIGNATURE_BYTES = 64
MAX_CENTRAL_DIRECTORY = 64 * 1024
"""Three entries take a few hundred bytes; a bigger directory is refused before it is parsed."""
CHUNK = 1024 * 1024
ALLOWED_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}

_EOCD = struct.Struct("<4s4H2LH")
_EOCD_SIGNATURE = b"PK\x05\x06"
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    NotImplementedError,
    RuntimeError,
    EOFError,
    OSError,
    ValueError,
    struct.error,
)


def _end_record(handle: IO[bytes]) -> tuple[int, int]:
    """(entries, central directory bytes) from the end record, found as zipfile finds it."""
    handle.seek(0, 2)
    size = handle.tell()
    tail_start = max(size - _EOCD.size - 0xFFFF, 0)
    handle.seek(tail_start)
    tail = handle.read()
    start = len(tail) - _EOCD.size
    if start < 0 or not (tail[start : start + 4] == _EOCD_SIGNATURE and tail[-2:] == b"\0\0"):
        start = tail.rfind(_EOCD_SIGNATURE)
    if start < 0 or start + _EOCD.size > len(tail):
        raise PackageError("format", "not a .fcpkg (zip) file: no end of central directory")
    _, _, _, _, entries, directory_size, _, _ = _EOCD.unpack_from(tail, start)
    return int(entries), int(directory_size)


def _check_name(name: str) -> None:
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or ".." in parts or (len(name) > 1 and name[1] == ":"):
        raise PackageError("format", f"entry name {name!r} is absolute or climbs out with '..'")
    if name not in (MANIFEST_ENTRY, SIGNATURE_ENTRY, *MODEL_ENTRIES):
        raise PackageError("format", f"unexpected entry {name!r}")


class PackageArchive:
    """The checked entries of one package file; use as a context manager."""

    def __init__(self, handle: IO[bytes]) -> None:
        entries, directory_size = _end_record(handle)
        if entries == 0xFFFF or directory_size == 0xFFFFFFFF:
            raise PackageError("format", "zip64 archives are not .fcpkg packages")
        if directory_size > MAX_CENTRAL_DIRECTORY:
            raise PackageError(
                "format",
                f"central directory of {directory_size} bytes (limit {MAX_CENTRAL_DIRECTORY})",
            )
        if entries != ENTRY_COUNT:
            raise PackageError(
                "format", f"package has {entries} entries; expected exactly {ENTRY_COUNT}"
            )
        handle.seek(0)
        try:
            self._zip = zipfile.ZipFile(handle)
        except _ZIP_ERRORS as exc:
            raise PackageError("format", f"not a .fcpkg (zip) file: {exc}") from exc
        infos = self._zip.infolist()
        if len(infos) != ENTRY_COUNT:
            self._zip.close()
            raise PackageError(
                "format", f"package has {len(infos)} entries; expected exactly {ENTRY_COUNT}"
            )
        self.entries: dict[str, zipfile.ZipInfo] = {}
        try:
            for info in infos:
                _check_name(info.filename)
                if info.filename in self.entries:
                    raise PackageError("format", f"entry {info.filename!r} appears twice")
                if info.flag_bits & 0x1:
                    raise PackageError("format", f"entry {info.filename!r} is encrypted")
                if info.compress_type not in ALLOWED_METHODS:
                    raise PackageError(
                        "format",
                        f"entry {info.filename!r} uses compression method {info.compress_type}; "
                        "only stored and deflate are allowed",
                    )
                self.entries[info.filename] = info
            for required in (MANIFEST_ENTRY, SIGNATURE_ENTRY):
                if required not in self.entries:
                    raise PackageError("format", f"entry {required!r} is missing")
            models = [n for n in MODEL_ENTRIES if n in self.entries]
            if len(models) != 1:
                raise PackageError("format", "package holds no model entry")
            self.model_entry = models[0]
        except PackageError:
            self._zip.close()
            raise

    def __enter__(self) -> PackageArchive:
        return self

    def __exit__(self, *exc: object) -> None:
        self._zip.close()

    def declared_size(self, name: str) -> int:
        return int(self.entries[name].file_size)

    def chunks(self, name: str, limit: int) -> Iterator[bytes]:
        """The entry in chunks; refused if its declared or actual size is off or over ``limit``."""
        info = self.entries[name]
        if info.file_size > limit:
            raise PackageError(
                "format", f"entry {name!r} declares {info.file_size} bytes (limit {limit})"
            )
        read = 0
        try:
            with self._zip.open(info) as entry:
                while chunk := entry.read(min(CHUNK, info.file_size - read + 1)):
                    read += len(chunk)
                    if read > info.file_size:
                        break
                    yield chunk
        except _ZIP_ERRORS as exc:
            raise PackageError(
                "format", f"corrupt entry {name!r}: {type(exc).__name__}: {exc}"
            ) from exc
        if read != info.file_size:
            raise PackageError(
                "format", f"entry {name!r} holds {read} bytes, its header says {info.file_size}"
            )

    def read(self, name: str, limit: int) -> bytes:
        return b"".join(self.chunks(name, limit))

    def read_hashed(self, name: str, size: int) -> tuple[bytes, str]:
        """An entry of exactly ``size`` bytes and its sha256, hashed chunk by chunk."""
        if self.declared_size(name) != size:
            raise PackageError(
                "format",
                f"entry {name!r} declares {self.declared_size(name)} bytes, "
                f"the manifest says {size}",
            )
        digest = hashlib.sha256()
        parts = []
        for chunk in self.chunks(name, size):
            digest.update(chunk)
            parts.append(chunk)
        return b"".join(parts), digest.hexdigest()
