"""Framing of package blocks on MQTT: a JSON header and raw bytes in one payload.

[4 bytes: header length, big-endian][header: UTF-8 JSON object][data]
"""

from __future__ import annotations

import json
import struct
from typing import Any

MAX_BLOCK = 256 * 1024
MAX_HEADER = 4096
_LENGTH = struct.Struct(">I")


class FrameError(ValueError):
    """A block payload that is not a well-formed frame."""


def encode_block(header: dict[str, Any], data: bytes) -> bytes:
    encoded = json.dumps(header, separators=(",", ":"), sort_keys=True).encode("utf-8")
    return _LENGTH.pack(len(encoded)) + encoded + data


def decode_block(payload: bytes) -> tuple[dict[str, Any], bytes]:
    if len(payload) < _LENGTH.size:
        raise FrameError(f"block of {len(payload)} bytes is shorter than its length prefix")
    (length,) = _LENGTH.unpack_from(payload)
    if length > MAX_HEADER or _LENGTH.size + length > len(payload):
        raise FrameError(f"block header length {length} does not fit a {len(payload)}-byte block")
    try:
        header = json.loads(payload[_LENGTH.size : _LENGTH.size + length])
    except ValueError as exc:
        raise FrameError(f"block header is not JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise FrameError("block header is not a JSON object")
    return header, payload[_LENGTH.size + length :]
