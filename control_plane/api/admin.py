"""Tokens (admin), the audit log and the caller's identity."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from flask_openapi3.blueprint import APIBlueprint
from flask_openapi3.models.tag import Tag

from control_plane.api.auth import current_principal
from control_plane.api.context import api_context, paged
from control_plane.api.schemas import (
    AuditList,
    AuditQuery,
    TokenCreated,
    TokenIn,
    TokenList,
    TokenOut,
    TokenPath,
    TokenQuery,
    WhoAmI,
)
from control_plane.services.tokens import token_view

SECURITY: list[dict[str, list[str]]] = [{"bearer": []}]

tokens = APIBlueprint(
    "tokens",
    __name__,
    url_prefix="/api/v1",
    abp_tags=[Tag(name="tokens", description="API tokens (admin only)")],
    abp_security=SECURITY,
)
audit = APIBlueprint(
    "audit",
    __name__,
    url_prefix="/api/v1",
    abp_tags=[Tag(name="audit", description="who changed what, when")],
    abp_security=SECURITY,
)


@tokens.get("/tokens", responses={200: TokenList})
def list_tokens(query: TokenQuery) -> dict[str, Any]:
    """API tokens (never their secrets)."""
    page = api_context().tokens.list(
        role=query.role,
        include_revoked=query.include_revoked,
        limit=query.limit,
        offset=query.offset,
    )
    return paged(page, [token_view(t) for t in page.items])


@tokens.post("/tokens", responses={201: TokenCreated})
def create_token(body: TokenIn) -> tuple[dict[str, Any], int]:
    """Issue a token with a role; the secret is in this answer only."""
    token, secret = api_context().tokens.create(
        body.name, body.role, current_principal(), body.ttl_seconds
    )
    return {**token_view(token), "token": secret}, 201


@tokens.get("/tokens/<token_id>", responses={200: TokenOut})
def get_token(path: TokenPath) -> dict[str, Any]:
    """One token."""
    return token_view(api_context().tokens.get(path.token_id))


@tokens.delete("/tokens/<token_id>", responses={200: TokenOut})
def revoke_token(path: TokenPath) -> dict[str, Any]:
    """Revoke a token (it stops working at once; the row stays for the audit trail)."""
    return token_view(api_context().tokens.revoke(path.token_id, current_principal()))


@audit.get("/audit", responses={200: AuditList})
def list_audit(query: AuditQuery) -> dict[str, Any]:
    """The audit log, newest first (filter by actor, action, subject, since, until)."""
    page = api_context().audit.list(
        actor=query.actor,
        action=query.action,
        subject=query.subject,
        since=query.since,
        until=query.until,
        limit=query.limit,
        offset=query.offset,
    )
    return paged(page, [asdict(e) for e in page.items])


@audit.get("/whoami", responses={200: WhoAmI})
def whoami() -> dict[str, Any]:
    """The caller's token name and role."""
    principal = current_principal()
    return {"name": principal.name, "role": principal.role}
