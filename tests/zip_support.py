"""Hand-made zip files for the package-hardening tests: bombs, lies and odd entries.

``zipfile`` refuses to write most of what an attacker sends (duplicate names
warn, methods it does not know, encrypted flags, sizes that lie), so these
helpers write the local headers and the central directory themselves.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

STORED, DEFLATED = 0, 8
_LOCAL = struct.Struct("<4s5H3L2H")
_CENTRAL = struct.Struct("<4s6H3L5H2L")
_END = struct.Struct("<4s4H2LH")


@dataclass(frozen=True)
class Entry:
    name: str
    payload: bytes
    """The bytes as stored in the archive (already compressed for DEFLATED)."""
    method: int = STORED
    crc: int = 0
    file_size: int = 0
    flags: int = 0


def stored(name: str, data: bytes) -> Entry:
    return Entry(name, data, STORED, zlib.crc32(data), len(data))


def deflated(name: str, data: bytes) -> Entry:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    payload = compressor.compress(data) + compressor.flush()
    return Entry(name, payload, DEFLATED, zlib.crc32(data), len(data))


def zeros_bomb(name: str, gib: int, declared: int | None = None) -> Entry:
    """A deflate stream of ``gib`` GiB of zeros in about ``gib`` MB (fully flushed blocks)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(bytes(1 << 20)) + compressor.flush(zlib.Z_FULL_FLUSH)
    count = gib * 1024
    payload = block * count + b"\x03\x00"  # an empty final block ends the stream
    crc = 0
    zero = bytes(1 << 20)
    for _ in range(count):
        crc = zlib.crc32(zero, crc)
    size = count << 20 if declared is None else declared
    return Entry(name, payload, DEFLATED, crc, size)


def build_zip(entries: list[Entry]) -> bytes:
    """The archive bytes: local headers and data, then the central directory."""
    body = bytearray()
    central = bytearray()
    for entry in entries:
        name = entry.name.encode("utf-8")
        size = min(entry.file_size, 0xFFFFFFFF)
        offset = len(body)
        body += _LOCAL.pack(
            b"PK\x03\x04",
            20,
            entry.flags,
            entry.method,
            0,
            0x21,
            entry.crc,
            len(entry.payload),
            size,
            len(name),
            0,
        )
        body += name + entry.payload
        central += _CENTRAL.pack(
            b"PK\x01\x02",
            20,
            20,
            entry.flags,
            entry.method,
            0,
            0x21,
            entry.crc,
            len(entry.payload),
            size,
            len(name),
            0,
            0,
            0,
            0,
            0o644 << 16,
            offset,
        )
        central += name
    end = _END.pack(b"PK\x05\x06", 0, 0, len(entries), len(entries), len(central), len(body), 0)
    return bytes(body + central + end)
