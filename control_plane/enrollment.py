"""The rules of device ids, enrollment tokens and device credentials (pure, no store).

A token is single-use, optionally bound to one device id, stored only as its
sha256, and expires (``DEFAULT_TOKEN_TTL``, 24 h unless ``ttl`` says otherwise).
A device id must be well formed and must not be a reserved name; the
enrollment service (``services/enrollment.py``) also refuses an id that is
enrolled or whose broker login exists.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from control_plane.errors import InvalidInput

DEFAULT_TOKEN_TTL = 24 * 3600.0
MAX_TOKEN_TTL = 365 * 24 * 3600.0
_DEVICE_ID = "abcdefghijklmnopqrstuvwxyz0123456789-_"
# names an operator-side login or a broker's own account may use; never a device id
RESERVED_IDS = frozenset(
    {"fleetcast-control-plane", "control-plane", "fleetcast", "admin", "root", "mosquitto"}
)


def token_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def check_device_id(device_id: str) -> str:
    if not 1 <= len(device_id) <= 64 or any(c not in _DEVICE_ID for c in device_id):
        raise InvalidInput(
            f"device id {device_id!r}: use 1-64 lower-case letters, digits, '-' or '_'"
        )
    if device_id in RESERVED_IDS:
        raise InvalidInput(f"device id {device_id!r} is reserved for the control plane")
    return device_id


def check_ttl(ttl: float) -> float:
    if not 0 < ttl <= MAX_TOKEN_TTL:
        raise InvalidInput(f"token ttl {ttl:g} s: expected more than 0 and at most 365 days")
    return ttl


@dataclass(frozen=True)
class Credentials:
    device_id: str
    device_token: str  # "<device id>.<secret>", presented as a bearer token on gRPC
    mqtt_password: str
