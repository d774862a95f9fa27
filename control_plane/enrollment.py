"""Enrollment tokens, device credentials and the device-id rules.

A token is single-use, optionally bound to one device id, stored only as its
sha256, and expires (``DEFAULT_TOKEN_TTL``, 24 h unless ``ttl`` says otherwise).
A device id must be well formed, must not be a reserved name, and must not
collide with a login the broker already has (``login_checks``, registered by
the embedded broker); all of that is checked when a token is minted for a
bound id and again when a device enrolls.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from control_plane.errors import Conflict, InvalidInput, Unauthenticated
from control_plane.store.db import Store

DEFAULT_TOKEN_TTL = 24 * 3600.0
MAX_TOKEN_TTL = 365 * 24 * 3600.0
_DEVICE_ID = "abcdefghijklmnopqrstuvwxyz0123456789-_"
# names an operator-side login or a broker's own account may use; never a device id
RESERVED_IDS = frozenset(
    {"fleetcast-control-plane", "control-plane", "fleetcast", "admin", "root", "mosquitto"}
)

Clock = Callable[[], float]
LoginCheck = Callable[[str], None]  # raises Conflict if the device id's broker login is taken


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


@dataclass(frozen=True)
class Credentials:
    device_id: str
    device_token: str
    mqtt_password: str


class Enrollment:
    """Tokens and device credentials in one :class:`Store`."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self.login_checks: list[LoginCheck] = []

    def check_new_id(self, device_id: str) -> None:
        """Refuse a malformed, reserved, enrolled or broker-taken device id (clear errors)."""
        check_device_id(device_id)
        with self.store.session() as db:
            if list(db.table("devices").rows_where("id = ?", [device_id])):
                raise Conflict(f"device {device_id!r} is already enrolled")
        for check in self.login_checks:
            check(device_id)

    def create_token(self, device_id: str | None, ttl: float = DEFAULT_TOKEN_TTL) -> str:
        if not 0 < ttl <= MAX_TOKEN_TTL:
            raise InvalidInput(f"token ttl {ttl:g} s: expected more than 0 and at most 365 days")
        if device_id is not None:
            self.check_new_id(device_id)
        token = "enr_" + secrets.token_urlsafe(24)
        now = self.clock()
        row = {
            "token_hash": token_hash(token),
            "device_id": device_id,
            "created_at": now,
            "expires_at": now + ttl,
        }
        with self.store.session() as db:
            db.table("enrollment_tokens").insert(row)
        return token

    def redeem(self, token: str, device_id: str, host: dict[str, Any]) -> Credentials:
        """Check the token and the id, and store the new device (credentials hashed)."""
        check_device_id(device_id)
        now = self.clock()
        with self.store.session() as db:
            tokens = db.table("enrollment_tokens")
            rows = list(tokens.rows_where("token_hash = ?", [token_hash(token)]))
            if not rows or rows[0]["used_by"]:
                raise Unauthenticated("enrollment token is unknown or already used")
            row = rows[0]
            expires = row["expires_at"] or (row["created_at"] or 0.0) + DEFAULT_TOKEN_TTL
            if now >= expires:
                raise Unauthenticated(
                    f"enrollment token expired {(now - expires) / 3600:.1f} h ago: "
                    "mint a new one with `fleetcast devices token`"
                )
            bound = row["device_id"]
            if bound and bound != device_id:
                raise Unauthenticated(f"enrollment token is for device {bound!r}")
            self.check_new_id(device_id)
            devices = db.table("devices")
            secret = secrets.token_urlsafe(32)
            devices.insert(
                {
                    "id": device_id,
                    "token_hash": token_hash(secret),
                    "status": "active",
                    "host_json": json.dumps(host, sort_keys=True),
                    "enrolled_at": now,
                    "next_version": 1,
                    "uploads_refused": 0,
                }
            )
            tokens.update(row["token_hash"], {"used_by": device_id, "used_at": now})
        return Credentials(device_id, f"{device_id}.{secret}", secrets.token_urlsafe(24))

    def undo(self, device_id: str) -> None:
        """Forget a device whose enrollment could not finish (its broker login failed)."""
        with self.store.session() as db:
            db.table("devices").delete_where("id = ?", [device_id])
            db.execute(
                "UPDATE enrollment_tokens SET used_by = NULL, used_at = NULL WHERE used_by = ?",
                [device_id],
            )

    def authenticate(self, device_token: str) -> str:
        """The device id a credential belongs to; Unauthenticated if unknown or revoked."""
        device_id, _, secret = device_token.partition(".")
        if not device_id or not secret:
            raise Unauthenticated("malformed device credential")
        with self.store.session() as db:
            rows = list(db.table("devices").rows_where("id = ?", [device_id]))
        if not rows or not hmac.compare_digest(rows[0]["token_hash"], token_hash(secret)):
            raise Unauthenticated("unknown device credential")
        if rows[0]["status"] != "active":
            raise Unauthenticated(f"device {device_id!r} is revoked")
        return device_id
