"""Catalog routes: models, versions (immutable, with a card), lifecycle stages, aliases."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from flask_openapi3.blueprint import APIBlueprint
from flask_openapi3.models.tag import Tag

from control_plane.api.auth import current_principal
from control_plane.api.context import api_context, paged
from control_plane.api.schemas import (
    AliasIn,
    AliasList,
    AliasOut,
    AliasPath,
    ModelIn,
    ModelList,
    ModelOut,
    ModelPath,
    ModelQuery,
    StageIn,
    VersionIn,
    VersionList,
    VersionOut,
    VersionPath,
    VersionQuery,
)
from control_plane.services.catalog import VersionInputs, version_view
from control_plane.store.records import ModelCard

SECURITY: list[dict[str, list[str]]] = [{"bearer": []}]
bp = APIBlueprint(
    "catalog",
    __name__,
    url_prefix="/api/v1",
    abp_tags=[Tag(name="catalog", description="models, versions, stages, aliases")],
    abp_security=SECURITY,
)


@bp.get("/models", responses={200: ModelList})
def list_models(query: ModelQuery) -> dict[str, Any]:
    """List models (filter by owner)."""
    page = api_context().catalog.list_models(
        owner=query.owner, limit=query.limit, offset=query.offset
    )
    return paged(page, [asdict(m) for m in page.items])


@bp.post("/models", responses={201: ModelOut})
def create_model(body: ModelIn) -> tuple[dict[str, Any], int]:
    """Add a model (a name that versions are registered under)."""
    model = api_context().catalog.create_model(
        body.name, body.description, body.owner, current_principal()
    )
    return asdict(model), 201


@bp.get("/models/<model>", responses={200: ModelOut})
def get_model(path: ModelPath) -> dict[str, Any]:
    """One model."""
    return asdict(api_context().catalog.get_model(path.model))


@bp.get("/models/<model>/versions", responses={200: VersionList})
def list_versions(path: ModelPath, query: VersionQuery) -> dict[str, Any]:
    """A model's versions (filter by stage)."""
    page = api_context().catalog.list_versions(
        path.model, stage=query.stage, limit=query.limit, offset=query.offset
    )
    return paged(page, [version_view(v) for v in page.items])


@bp.post("/models/<model>/versions", responses={201: VersionOut})
def register_version(path: ModelPath, body: VersionIn) -> tuple[dict[str, Any], int]:
    """Register an immutable version with its model card and uploads (stage: registered)."""
    card = ModelCard(
        intended_use=body.card.intended_use,
        training_data=body.card.training_data,
        owner=body.card.owner,
        metrics=body.card.metrics,
    )
    given = body.data.model_dump() if body.data else {}
    data = {k: v for k, v in given.items() if v is not None}
    created = api_context().catalog.register_version(
        path.model,
        body.version,
        card,
        current_principal(),
        source_sha256=body.source_sha256,
        inputs=VersionInputs(body.source_format, data),
    )
    return version_view(created), 201


@bp.get("/models/<model>/versions/<version>", responses={200: VersionOut})
def get_version(path: VersionPath) -> dict[str, Any]:
    """One version with its card and stage."""
    return version_view(api_context().catalog.get_version(path.model, path.version))


@bp.post("/models/<model>/versions/<version>/stage", responses={200: VersionOut})
def move_stage(path: VersionPath, body: StageIn) -> dict[str, Any]:
    """Move a version along registered → compiled → staged → production → deprecated → retired.

    An illegal move is a 409 problem whose ``transition`` names it. Retiring a
    version devices still run is a 409 whose ``devices`` lists them, unless
    ``force``: then they are rolled back (the audit entry says how).
    """
    moved = api_context().catalog.move_stage(
        path.model,
        path.version,
        body.stage,
        current_principal(),
        reason=body.reason,
        force=body.force,
    )
    return version_view(moved)


@bp.get("/models/<model>/aliases", responses={200: AliasList})
def list_aliases(path: ModelPath) -> dict[str, Any]:
    """A model's aliases (production, staging, …)."""
    return {"items": [asdict(a) for a in api_context().catalog.list_aliases(path.model)]}


@bp.get("/models/<model>/aliases/<alias>", responses={200: AliasOut})
def get_alias(path: AliasPath) -> dict[str, Any]:
    """Where an alias points."""
    return asdict(api_context().catalog.get_alias(path.model, path.alias))


@bp.put("/models/<model>/aliases/<alias>", responses={200: AliasOut})
def set_alias(path: AliasPath, body: AliasIn) -> dict[str, Any]:
    """Point an alias at a version (it keeps where it pointed before)."""
    alias = api_context().catalog.set_alias(
        path.model, path.alias, body.version, current_principal()
    )
    return asdict(alias)


@bp.delete("/models/<model>/aliases/<alias>", responses={204: None})
def delete_alias(path: AliasPath) -> tuple[str, int]:
    """Remove an alias."""
    api_context().catalog.delete_alias(path.model, path.alias, current_principal())
    return "", 204
