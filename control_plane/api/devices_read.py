"""The fleet: devices (list, show, labels, revoke) and enrollment tokens.

Reads are for viewers; labels, revocation and enrollment tokens for operators
(``api/auth.py``). Every write goes through the shared services
(``services/devices.py``, ``services/enrollment.py``): a revocation reaches the
transports through the change notifier, as any other change does.
"""

from __future__ import annotations

from typing import Annotated, Any

from flask_openapi3.blueprint import APIBlueprint
from flask_openapi3.models.tag import Tag
from pydantic import BaseModel, Field

from control_plane.api.auth import current_principal
from control_plane.api.context import api_context, paged
from control_plane.api.schemas import PageOut, Paging, Strict
from control_plane.errors import InvalidInput
from control_plane.store.records import Device

SECURITY: list[dict[str, list[str]]] = [{"bearer": []}]
bp = APIBlueprint(
    "devices",
    __name__,
    url_prefix="/api/v1",
    abp_tags=[Tag(name="devices", description="the fleet and its enrollment tokens")],
    abp_security=SECURITY,
)


class DevicePath(Strict):
    device_id: str = Field(min_length=1, max_length=128)


class DeviceQuery(Paging):
    status: str | None = Field(None, pattern=r"^(active|revoked)$")
    profile: str | None = Field(None, max_length=200)
    selector: str | None = Field(
        None, max_length=1000, description="labels that must match: key=value,key2=value2"
    )


class DeviceOut(BaseModel):
    id: str
    status: str
    labels: dict[str, str]
    profile_id: str | None
    agent_version: str | None
    slots: dict[str, Any]
    host: dict[str, Any]
    enrolled_at: float
    revoked_at: float | None
    last_seen: float | None


class DevicePatch(Strict):
    labels: dict[str, str] | None = Field(
        None, max_length=50, description="replaces the device's labels"
    )
    profile_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        description="the hardware profile deployments pick the package for",
    )


class EnrollmentTokenIn(Strict):
    device_id: str | None = Field(
        None, min_length=1, max_length=128, description="bind the token to this device id"
    )
    ttl_seconds: float = Field(86400.0, gt=0, le=30 * 86400, description="valid this long")


class EnrollmentTokenOut(BaseModel):
    token: str = Field(description="one-time; shown in this answer only")
    device_id: str | None
    ttl_seconds: float


class EnrollmentTokenBatchIn(Strict):
    device_ids: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        min_length=1, max_length=10_000, description="one token per id, each bound to its id"
    )
    ttl_seconds: float = Field(86400.0, gt=0, le=30 * 86400, description="valid this long")


class BoundToken(BaseModel):
    device_id: str
    token: str = Field(description="one-time; shown in this answer only")


class EnrollmentTokenBatchOut(BaseModel):
    tokens: list[BoundToken]
    ttl_seconds: float


class DeviceList(PageOut):
    items: list[DeviceOut]


def parse_selector(text: str | None) -> dict[str, str] | None:
    if not text:
        return None
    labels = {}
    for part in text.split(","):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise InvalidInput(f"selector {text!r}: expected key=value[,key=value…]")
        labels[key.strip()] = value.strip()
    return labels


def device_view(device: Device) -> dict[str, Any]:
    return {
        "id": device.id,
        "status": device.status,
        "labels": device.labels,
        "profile_id": device.profile_id,
        "agent_version": device.agent_version,
        "slots": device.slots,
        "host": device.host,
        "enrolled_at": device.enrolled_at,
        "revoked_at": device.revoked_at,
        "last_seen": device.last_seen,
    }  # never the credential's hash


@bp.get("/devices", responses={200: DeviceList})
def list_devices(query: DeviceQuery) -> dict[str, Any]:
    """Devices (filter by status, profile, label selector)."""
    page = api_context().repos.devices.list(
        status=query.status,
        profile_id=query.profile,
        labels=parse_selector(query.selector),
        limit=query.limit,
        offset=query.offset,
    )
    return paged(page, [device_view(d) for d in page.items])


@bp.get("/devices/<device_id>", responses={200: DeviceOut})
def get_device(path: DevicePath) -> dict[str, Any]:
    """One device."""
    return device_view(api_context().repos.devices.get(path.device_id))


@bp.patch("/devices/<device_id>", responses={200: DeviceOut})
def update_device(path: DevicePath, body: DevicePatch) -> dict[str, Any]:
    """Set a device's labels (what selectors match on) and/or its hardware profile."""
    if body.labels is None and body.profile_id is None:
        raise InvalidInput("nothing to change: give labels and/or profile_id")
    context = api_context()
    actor = current_principal().name
    if body.labels is not None:
        context.devices.set_labels(path.device_id, body.labels, actor)
    if body.profile_id is not None:
        context.devices.set_profile(path.device_id, body.profile_id, actor)
    return device_view(context.devices.get(path.device_id))


@bp.post("/devices/<device_id>/revoke", responses={200: DeviceOut})
def revoke(path: DevicePath) -> dict[str, Any]:
    """Cut a device off both transports (its credential stops working; its history stays)."""
    return device_view(api_context().devices.revoke(path.device_id, current_principal().name))


@bp.post("/enrollment-tokens", responses={201: EnrollmentTokenOut})
def create_enrollment_token(body: EnrollmentTokenIn) -> tuple[dict[str, Any], int]:
    """A one-time enrollment token for ``fleetcast-agent enroll`` (optionally bound to an id)."""
    token = api_context().enrollment.create_token(
        current_principal().name, body.device_id, body.ttl_seconds
    )
    return {"token": token, "device_id": body.device_id, "ttl_seconds": body.ttl_seconds}, 201


@bp.post("/enrollment-tokens/batch", responses={201: EnrollmentTokenBatchOut})
def create_enrollment_tokens(body: EnrollmentTokenBatchIn) -> tuple[dict[str, Any], int]:
    """One-time tokens for a batch of devices, each bound to its id (a fleet's first
    enrollment); every id is checked before any token is stored, and one audit entry
    lists them."""
    tokens = api_context().enrollment.create_tokens(
        current_principal().name, body.device_ids, body.ttl_seconds
    )
    pairs = [{"device_id": d, "token": t} for d, t in zip(body.device_ids, tokens, strict=True)]
    return {"tokens": pairs, "ttl_seconds": body.ttl_seconds}, 201
