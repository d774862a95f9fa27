"""API tokens with roles (viewer < operator < admin): issue, authenticate, revoke.

A token is ``fct_`` + 32 random url-safe bytes, shown once; the store keeps its
sha256 only. A device credential (``<device id>.<secret>`` from enrollment) is
recognised so that it can be refused by name rather than as an unknown token.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import asdict, dataclass
from typing import Any

from control_plane.errors import Conflict, InvalidInput, PermissionDenied, Unauthenticated
from control_plane.services import Clock
from control_plane.services.audit import AuditService
from control_plane.store.records import DEFAULT_LIMIT, ROLES, ApiToken, Page
from control_plane.store.repos import Repositories

logger = logging.getLogger(__name__)

TOKEN_PREFIX = "fct_"
TOUCH_EVERY = 60.0  # seconds between last_used_at writes for one token


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's name and role (``token_id`` None for the system)."""

    name: str
    role: str
    token_id: str | None = None


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def role_allows(role: str, needed: str) -> bool:
    """Whether ``role`` can do what ``needed`` can (each role includes the ones before it)."""
    return ROLES.index(role) >= ROLES.index(needed)


def token_view(token: ApiToken) -> dict[str, Any]:
    """A token as the audit log and the API show it: never the hash."""
    view = asdict(token)
    view.pop("token_hash")
    return view


class TokenService:
    def __init__(self, repos: Repositories, audit: AuditService, clock: Clock = time.time) -> None:
        self.repos = repos
        self.audit = audit
        self.clock = clock

    def create(
        self, name: str, role: str, actor: Principal, ttl_seconds: float | None = None
    ) -> tuple[ApiToken, str]:
        """A new token and its secret (shown once)."""
        if role not in ROLES:
            raise InvalidInput(f"role {role!r}: expected one of {list(ROLES)}")
        if ttl_seconds is not None and ttl_seconds <= 0:
            raise InvalidInput(f"ttl_seconds {ttl_seconds}: must be positive")
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = self.clock()
        token = self.repos.api_tokens.add(
            name,
            hash_secret(secret),
            role,
            actor.name,
            now,
            expires_at=now + ttl_seconds if ttl_seconds is not None else None,
        )
        self.audit.record(actor.name, "token.create", f"token:{token.id}", after=token_view(token))
        return token, secret

    def revoke(self, token_id: str, actor: Principal) -> ApiToken:
        before = self.repos.api_tokens.get(token_id)
        if before.revoked_at is not None:
            raise Conflict(f"API token {token_id!r} is already revoked")
        after = self.repos.api_tokens.revoke(token_id, self.clock())
        self.audit.record(
            actor.name,
            "token.revoke",
            f"token:{token_id}",
            before=token_view(before),
            after=token_view(after),
        )
        return after

    def get(self, token_id: str) -> ApiToken:
        return self.repos.api_tokens.get(token_id)

    def list(
        self,
        *,
        role: str | None = None,
        include_revoked: bool = False,
        limit: int = DEFAULT_LIMIT,
        offset: int = 0,
    ) -> Page[ApiToken]:
        return self.repos.api_tokens.list(
            role=role, include_revoked=include_revoked, limit=limit, offset=offset
        )

    def authenticate(self, bearer: str) -> Principal:
        """The principal of an API token; Unauthenticated or PermissionDenied naming why."""
        if not bearer:
            raise Unauthenticated("missing bearer token (Authorization: Bearer <token>)")
        if not bearer.startswith(TOKEN_PREFIX):
            if self._is_device_credential(bearer):
                raise PermissionDenied("device credentials cannot call operator routes")
            raise Unauthenticated("unknown bearer token")
        token = self.repos.api_tokens.by_hash(hash_secret(bearer))
        if token is None:
            raise Unauthenticated("unknown bearer token")
        now = self.clock()
        if token.revoked_at is not None:
            raise Unauthenticated(f"API token {token.name!r} is revoked")
        if token.expires_at is not None and token.expires_at <= now:
            raise Unauthenticated(f"API token {token.name!r} expired")
        if token.last_used_at is None or now - token.last_used_at >= TOUCH_EVERY:
            self.repos.api_tokens.touch(token.id, now)
        return Principal(token.name, token.role, token.id)

    def _is_device_credential(self, bearer: str) -> bool:
        device_id, dot, secret = bearer.rpartition(".")  # secrets have no dot
        if not dot or not device_id or not secret:
            return False
        device = self.repos.devices.find(device_id)
        return device is not None and hmac.compare_digest(device.token_hash, hash_secret(secret))


def bootstrap_admin(
    repos: Repositories, name: str = "admin", *, force: bool = False, clock: Clock = time.time
) -> tuple[ApiToken, str]:
    """The first admin token (``fleetcast admin init``); Conflict if an admin exists already."""
    existing = repos.api_tokens.list(role="admin", limit=1)
    if existing.items and not force:
        raise Conflict(
            f"an admin token exists already ({existing.items[0].name!r}); "
            "ask an admin for a token, or pass --force to add another"
        )
    system = Principal("bootstrap", "admin")
    return TokenService(repos, AuditService(repos.audit, clock), clock).create(
        name, "admin", system
    )
