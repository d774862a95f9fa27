"""Enrollment: one-time tokens with a TTL, turned into credentials by a device's first call."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Sequence
from typing import Any, Protocol

from control_plane.enrollment import (
    DEFAULT_TOKEN_TTL,
    Credentials,
    check_device_id,
    check_ttl,
    token_hash,
)
from control_plane.errors import (
    Conflict,
    ControlPlaneError,
    InvalidInput,
    NotFound,
    Unauthenticated,
)
from control_plane.services import Clock
from control_plane.store.records import NewDevice
from control_plane.store.repos import Repositories

logger = logging.getLogger(__name__)


class DeviceLogins(Protocol):
    """The broker's device logins (the embedded mosquitto); absent without one."""

    def check_login_free(self, device_id: str) -> None:
        """Conflict if the device's login already exists."""
        ...

    def add_device(self, device_id: str, password: str) -> None: ...

    def remove_device(self, device_id: str) -> None: ...


class EnrollmentService:
    def __init__(
        self, repos: Repositories, clock: Clock = time.time, logins: DeviceLogins | None = None
    ) -> None:
        self.repos = repos
        self.clock = clock
        self.logins = logins  # set by `fleetcast serve` when it runs the embedded broker

    def check_new_id(self, device_id: str) -> None:
        """Refuse a malformed, reserved, enrolled or broker-taken device id (clear errors)."""
        check_device_id(device_id)
        if self.repos.devices.find(device_id) is not None:
            raise Conflict(f"device {device_id!r} is already enrolled")
        if self.logins is not None:
            self.logins.check_login_free(device_id)

    def create_token(
        self, actor: str, device_id: str | None = None, ttl: float = DEFAULT_TOKEN_TTL
    ) -> str:
        """A one-time token, valid ``ttl`` seconds (bound to ``device_id`` if given)."""
        check_ttl(ttl)
        if device_id is not None:
            self.check_new_id(device_id)
        token = "enr_" + secrets.token_urlsafe(24)
        now = self.clock()
        self.repos.enrollment_tokens.add(token_hash(token), device_id, now, now + ttl)
        self.repos.audit.add(
            actor, "enrollment_token.create", device_id or "*", now, detail={"ttl": ttl}
        )
        return token

    def create_tokens(
        self, actor: str, device_ids: Sequence[str], ttl: float = DEFAULT_TOKEN_TTL
    ) -> list[str]:
        """One token per device id, each bound to its id (`fleetcast devices token --count`).

        Every id is checked before any token is stored (a repeated, malformed, enrolled
        or broker-taken id refuses the whole batch, naming it); one audit entry lists them.
        """
        check_ttl(ttl)
        seen: set[str] = set()
        for device_id in device_ids:
            if device_id in seen:
                raise InvalidInput(f"device id {device_id!r} is listed twice")
            seen.add(device_id)
            self.check_new_id(device_id)
        now = self.clock()
        tokens = []
        for device_id in device_ids:
            token = "enr_" + secrets.token_urlsafe(24)
            self.repos.enrollment_tokens.add(token_hash(token), device_id, now, now + ttl)
            tokens.append(token)
        self.repos.audit.add(
            actor,
            "enrollment_token.create",
            "*",
            now,
            detail={"ttl": ttl, "count": len(tokens), "device_ids": list(device_ids)},
        )
        return tokens

    def enroll(self, token: str, device_id: str, host: dict[str, Any]) -> Credentials:
        """Check the token and the id, add the broker login, then store the device.

        The store uses the token and adds the device in one transaction; if that
        fails, the login just added is removed again.
        """
        check_device_id(device_id)
        now = self.clock()
        digest = token_hash(token)
        try:
            stored = self.repos.enrollment_tokens.get(digest)
        except NotFound:
            raise Unauthenticated("enrollment token is unknown or already used") from None
        if stored.used_by:
            raise Unauthenticated("enrollment token is unknown or already used")
        # a token of an older store without an expiry lasts the default TTL
        expires = stored.expires_at or stored.created_at + DEFAULT_TOKEN_TTL
        if now >= expires:
            raise Unauthenticated(
                f"enrollment token expired {(now - expires) / 3600:.1f} h ago: "
                "mint a new one with `fleetcast devices token`"
            )
        if stored.device_id and stored.device_id != device_id:
            raise Unauthenticated(f"enrollment token is for device {stored.device_id!r}")
        self.check_new_id(device_id)
        secret = secrets.token_urlsafe(32)
        creds = Credentials(device_id, f"{device_id}.{secret}", secrets.token_urlsafe(24))
        if self.logins is not None:
            self.logins.add_device(device_id, creds.mqtt_password)
        try:
            agent_version = host.get("agent_version")
            self.repos.devices.enroll(
                NewDevice(
                    device_id,
                    token_hash(secret),
                    host=host,
                    agent_version=str(agent_version) if agent_version else None,
                ),
                digest,
                now,
            )
        except BaseException:
            if self.logins is not None:
                try:
                    self.logins.remove_device(device_id)
                except ControlPlaneError:
                    logger.exception("enrollment of %s failed; its broker login stays", device_id)
            raise
        self.repos.audit.add(f"device:{device_id}", "device.enroll", device_id, now)
        return creds
