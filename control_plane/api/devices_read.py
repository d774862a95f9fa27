"""Read-only device routes straight over ``repos.devices`` (viewer and above).

A stop-gap kept apart on purpose: once the devices service (enrollment,
labels, revocation; ``services/devices.py``) is merged, these routes should
call it and gain the writes (labels, revoke, enrollment tokens).
"""

from __future__ import annotations

from typing import Any

from flask_openapi3.blueprint import APIBlueprint
from flask_openapi3.models.tag import Tag
from pydantic import BaseModel, Field

from control_plane.api.context import api_context, paged
from control_plane.api.schemas import PageOut, Paging, Strict
from control_plane.errors import InvalidInput
from control_plane.store.records import Device

SECURITY: list[dict[str, list[str]]] = [{"bearer": []}]
bp = APIBlueprint(
    "devices",
    __name__,
    url_prefix="/api/v1",
    abp_tags=[Tag(name="devices", description="the fleet (read-only here)")],
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
