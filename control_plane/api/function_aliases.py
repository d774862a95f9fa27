"""``/api/v1/functions/aliases``: function aliases and their traffic splits (docs/functions.md).

Viewer reads (a function container resolves its alias here at init, with a
viewer token); operator sets. A set is audited with the caller's name; the
rollout engine's moves are audited as ``rollouts``.
"""

from __future__ import annotations

from typing import Any

from flask_openapi3.blueprint import APIBlueprint
from flask_openapi3.models.tag import Tag
from pydantic import BaseModel, Field

from control_plane.api.auth import current_principal
from control_plane.api.context import api_context, paged
from control_plane.api.schemas import NAME, PageOut, Paging, Strict
from control_plane.core.function_alias import NAME_PATTERN

SECURITY: list[dict[str, list[str]]] = [{"bearer": []}]
bp = APIBlueprint(
    "function_aliases",
    __name__,
    url_prefix="/api/v1",
    abp_tags=[Tag(name="functions", description="function aliases and traffic splits")],
    abp_security=SECURITY,
)


class FunctionAliasPath(Strict):
    name: str = Field(pattern=NAME_PATTERN, description="FUNCTION:ALIAS, e.g. fraud-scorer:live")


class FunctionAliasQuery(Paging):
    model: str | None = Field(None, pattern=NAME)


class FunctionAliasIn(Strict):
    model: str = Field(pattern=NAME)
    routes: dict[str, int] | None = Field(
        None, description='version → percent, summing to 100: {"7": 90, "8": 10}'
    )
    version: str | None = Field(None, pattern=NAME, description="shorthand for {version: 100}")
    telemetry_device: str | None = Field(
        None, pattern=NAME, description="the device id the containers report telemetry under"
    )
    expected_revision: int | None = Field(None, ge=0, description="compare-and-set (0: new)")


class FunctionAliasOut(BaseModel):
    name: str
    model: str
    routes: dict[str, int]
    version: str = Field(description="the version with the largest share")
    telemetry_device: str
    revision: int
    packages: dict[str, dict[str, str]] = Field(description="version → {profile: sha256}")
    rollout: str | None = Field(description="the running or paused rollout moving it")
    created_at: float
    updated_at: float


class FunctionAliasList(PageOut):
    items: list[FunctionAliasOut]


@bp.get("/functions/aliases", responses={200: FunctionAliasList})
def list_function_aliases(query: FunctionAliasQuery) -> dict[str, Any]:
    """Function aliases (filter by model), by name."""
    service = api_context().function_aliases
    page = service.list(model=query.model, limit=query.limit, offset=query.offset)
    return paged(page, [service.view(a) for a in page.items])


@bp.get("/functions/aliases/<name>", responses={200: FunctionAliasOut})
def get_function_alias(path: FunctionAliasPath) -> dict[str, Any]:
    """One alias: its split, and per version the packages a container may load."""
    service = api_context().function_aliases
    return service.view(service.get(path.name))


@bp.put("/functions/aliases/<name>", responses={200: FunctionAliasOut})
def set_function_alias(path: FunctionAliasPath, body: FunctionAliasIn) -> dict[str, Any]:
    """Create or move an alias: 400 a split not summing to 100, 404 an unknown version,
    409 a retired version, a rollout moving the alias, or a stale ``expected_revision``."""
    from control_plane.errors import InvalidInput

    if (body.routes is None) == (body.version is None):
        raise InvalidInput("give exactly one of routes ({version: percent}) or version")
    routes = body.routes if body.routes is not None else {str(body.version): 100}
    service = api_context().function_aliases
    alias = service.set(
        path.name,
        body.model,
        routes,
        current_principal(),
        telemetry_device=body.telemetry_device,
        expected_revision=body.expected_revision,
    )
    return service.view(alias)
