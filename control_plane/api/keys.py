"""``/api/v1/keys``: package signing keys, their rotation under the fleet, retirement (admin).

See ``control_plane/services/keys.py`` and docs/security.md ("Rotating the signing key").
"""

from __future__ import annotations

from typing import Any

from flask_openapi3.blueprint import APIBlueprint
from flask_openapi3.models.tag import Tag
from pydantic import BaseModel, Field

from control_plane.api.auth import current_principal
from control_plane.api.context import api_context
from control_plane.api.schemas import Strict

SECURITY: list[dict[str, list[str]]] = [{"bearer": []}]
bp = APIBlueprint(
    "keys",
    __name__,
    url_prefix="/api/v1",
    abp_tags=[Tag(name="keys", description="package signing keys (admin only)")],
    abp_security=SECURITY,
)


class RotationOut(BaseModel):
    key_id: str = Field(description="the new key")
    previous_key_id: str
    issued_at: float
    acked: list[str] = Field(description="devices that trust the new key")
    failed: dict[str, str] = Field(description="device -> the reason its agent refused")
    pending: list[str] = Field(description="devices that have not answered yet")


class KeyOut(BaseModel):
    key_id: str
    state: str = Field(description="current, previous (still trusted) or retired")
    rotation: RotationOut | None = Field(None, description="the rotation that replaced this key")


class KeyList(BaseModel):
    items: list[KeyOut]


class RotateIn(Strict):
    retire_previous: bool = Field(
        False, description="stop trusting the old key at once, without waiting for the acks"
    )


class RetireIn(Strict):
    force: bool = Field(False, description="retire even though devices have not acked")


class KeyPath(Strict):
    key_id: str = Field(pattern=r"^[0-9a-f]{16}$")


@bp.get("/keys", responses={200: KeyList})
def list_keys() -> dict[str, Any]:
    """The signing keys and how far each rotation got across the fleet."""
    return {"items": api_context().keys.list()}


@bp.post("/keys/rotate", responses={201: RotationOut})
def rotate(body: RotateIn) -> tuple[dict[str, Any], int]:
    """Make a new signing key; every active device gets it in a message signed by the old one."""
    done = api_context().keys.rotate(current_principal(), retire_previous=body.retire_previous)
    return done.view(), 201


@bp.post("/keys/<key_id>/retire", responses={200: KeyOut})
def retire(path: KeyPath, body: RetireIn) -> dict[str, Any]:
    """Stop trusting a previous key (409 naming the devices that have not acked, unless force)."""
    return api_context().keys.retire(path.key_id, current_principal(), force=body.force)
