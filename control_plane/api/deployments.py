"""``POST /api/v1/deployments``: a version (or alias) to a device or a label selector."""

from __future__ import annotations

from typing import Any

from flask_openapi3.blueprint import APIBlueprint
from flask_openapi3.models.tag import Tag
from pydantic import BaseModel, Field

from control_plane.api.auth import current_principal
from control_plane.api.context import api_context
from control_plane.api.schemas import NAME, Strict

SECURITY: list[dict[str, list[str]]] = [{"bearer": []}]
bp = APIBlueprint(
    "deployments",
    __name__,
    url_prefix="/api/v1",
    abp_tags=[Tag(name="deployments", description="versions to devices")],
    abp_security=SECURITY,
)


class DeploymentIn(Strict):
    model: str = Field(pattern=NAME)
    version: str = Field(pattern=NAME, description="a version or an alias (production, …)")
    device_id: str | None = Field(None, min_length=1, max_length=128)
    selector: dict[str, str] | None = Field(
        None, max_length=20, description="labels every target device has"
    )


class DeployedCommand(BaseModel):
    device_id: str
    command_id: str
    execution_version: int
    sha256: str


class DeploymentOut(BaseModel):
    model: str
    version: str
    commands: list[DeployedCommand]


@bp.post("/deployments", responses={202: DeploymentOut})
def deploy(body: DeploymentIn) -> tuple[dict[str, Any], int]:
    """Send every matching active device the version's package for its profile.

    All or nothing: a device whose profile has no package of the version makes it
    a 409 naming the profile, before any command is sent.
    """
    done = api_context().deployments.deploy(
        body.model,
        body.version,
        current_principal(),
        device_id=body.device_id,
        selector=body.selector,
    )
    commands = [
        {
            "device_id": c.device_id,
            "command_id": c.id,
            "execution_version": c.execution_version,
            "sha256": sha,
        }
        for c, sha in done.commands
    ]
    return {"model": done.model, "version": done.version, "commands": commands}, 202
