"""Who may call what: bearer tokens and one role policy for every ``/api/v1`` route.

- ``GET``/``HEAD`` on any blueprint: viewer (and above);
- any other method: operator (deploys, compiles, catalog changes);
- every route of an admin blueprint (tokens, signing keys): admin.

A device credential is refused with 403 on every route; no token, an unknown,
revoked or expired one with 401. Routes outside the blueprints (health,
OpenAPI document) are public.
"""

from __future__ import annotations

from flask import Flask, g, request

from control_plane.errors import PermissionDenied, Unauthenticated
from control_plane.services.tokens import Principal, role_allows

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
ADMIN_BLUEPRINTS = frozenset({"tokens", "keys"})
PUBLIC_ENDPOINTS = frozenset({"health.healthz", "health.readyz", "openapi_json", "metrics"})


def required_role(blueprint: str | None, method: str) -> str:
    if blueprint in ADMIN_BLUEPRINTS:
        return "admin"
    return "viewer" if method in SAFE_METHODS else "operator"


def bearer_token() -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise Unauthenticated("missing bearer token (Authorization: Bearer <token>)")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
    return token.strip()


def current_principal() -> Principal:
    principal: Principal | None = g.get("principal")
    if principal is None:  # a blueprint route always passes through authorize() first
        raise Unauthenticated("this route needs a bearer token")
    return principal


def install_auth(app: Flask, blueprints: frozenset[str]) -> None:
    """Authenticate and authorize every request to a route of ``blueprints``."""
    from control_plane.api.context import api_context

    @app.before_request
    def authorize() -> None:
        if request.endpoint in PUBLIC_ENDPOINTS or request.blueprint not in blueprints:
            return
        principal = api_context().tokens.authenticate(bearer_token())
        needed = required_role(request.blueprint, request.method)
        if not role_allows(principal.role, needed):
            raise PermissionDenied(
                f"{request.method} {request.path} needs the {needed} role; "
                f"token {principal.name!r} is {principal.role}"
            )
        g.principal = principal
