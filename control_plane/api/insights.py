"""Explanations, attribution drift and lineage routes (all read: viewer).

- ``GET /predictions/{prediction_id}/explanation``: SHAP attributions of one captured
  prediction (computed once through the package's runtime, then read back);
- ``GET /attributions``: the background job's mean |SHAP| per window and package, with
  the attribution-drift verdict against the package's reference attributions;
- ``GET /lineage``: the loop's lineage from a dataset, prediction, package or device,
  downstream or upstream; ``GET /lineage/openlineage``: OpenLineage run events.
"""

from __future__ import annotations

from typing import Any, Literal

from flask_openapi3.blueprint import APIBlueprint
from flask_openapi3.models.tag import Tag
from pydantic import BaseModel, Field

from control_plane.api.context import api_context
from control_plane.api.schemas import NAME, Strict

SECURITY: list[dict[str, list[str]]] = [{"bearer": []}]
bp = APIBlueprint(
    "insights",
    __name__,
    url_prefix="/api/v1",
    abp_tags=[Tag(name="insights", description="explanations, attribution drift, lineage")],
    abp_security=SECURITY,
)

ID = r"^[^/\x00-\x1f]{1,128}$"


class PredictionPath(Strict):
    prediction_id: str = Field(min_length=1, max_length=128, pattern=ID)


class ExplanationQuery(Strict):
    device: str | None = Field(
        None, min_length=1, max_length=128, description="the device, when several captured the id"
    )


class Attribution(BaseModel):
    feature: str
    value: float | None
    shap: float | None


class Additivity(BaseModel):
    sum_plus_base: float | None = Field(description="sum of the attributions + base value")
    error: float | None = Field(description="|sum_plus_base - prediction|")
    tolerance: float | None
    holds: bool


class ExplanationOut(BaseModel):
    prediction_id: str
    device_id: str
    model: str
    version: str
    package_id: str
    package_sha256: str
    predicted_at: float
    output: str
    output_index: int
    explained: str
    base_value: float | None = Field(description="mean model output over the background")
    prediction: float | None = Field(description="the explained output, rescored by the runtime")
    captured_output: float | None = Field(description="the same output as the device captured it")
    attributions: list[Attribution] = Field(description="per feature, largest |SHAP| first")
    additivity: Additivity
    method: dict[str, Any]
    cached: bool


class AttributionQuery(Strict):
    model: str = Field(pattern=NAME)
    version: str | None = Field(None, pattern=NAME)
    since: float | None = Field(None, ge=0, le=1e11, description="windows starting at or after")
    until: float | None = Field(None, ge=0, le=1e11, description="windows starting before")


class AttributionOut(BaseModel):
    model: str
    version: str | None
    since: float | None
    until: float | None
    budget: dict[str, Any] = Field(description="rows, coalitions and background per window")
    window_seconds: float
    thresholds: dict[str, Any]
    packages: list[dict[str, Any]] = Field(
        description="per package: reference mean |SHAP|, windows with their attribution drift"
    )


class LineageQuery(Strict):
    dataset: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description="dataset sha256")
    prediction: str | None = Field(None, min_length=1, max_length=128)
    package: str | None = Field(None, min_length=1, max_length=256, description="id or sha256")
    device: str | None = Field(None, min_length=1, max_length=128)
    direction: Literal["up", "down"] | None = Field(
        None, description="default: down from a dataset, up from anything else"
    )


class LineageNode(BaseModel):
    id: str
    kind: str
    attrs: dict[str, Any]


class LineageEdge(BaseModel):
    src: str
    dst: str
    relation: str


class LineageOut(BaseModel):
    start: LineageNode
    direction: str
    nodes: list[LineageNode]
    edges: list[LineageEdge]
    devices_running: list[LineageNode] | None = Field(
        None, description="dataset queries: devices and functions running a package built from it"
    )
    downstream: list[LineageNode] | None = Field(
        None, description="prediction queries: its feedback and explanations"
    )


class OpenLineageQuery(Strict):
    model: str | None = Field(None, pattern=NAME)


class OpenLineageOut(BaseModel):
    events: list[dict[str, Any]] = Field(description="OpenLineage RunEvent JSON, COMPLETE")


@bp.get("/predictions/<prediction_id>/explanation", responses={200: ExplanationOut})
def explanation(path: PredictionPath, query: ExplanationQuery) -> dict[str, Any]:
    """Per-feature SHAP attributions of a captured prediction, with base value and additivity."""
    return api_context().explanations.explanation(path.prediction_id, query.device)


@bp.get("/attributions", responses={200: AttributionOut})
def attributions(query: AttributionQuery) -> dict[str, Any]:
    """Mean |SHAP| per feature per window and package, and attribution drift vs the reference."""
    return api_context().explanations.attributions(
        query.model, query.version, query.since, query.until
    )


@bp.get("/lineage", responses={200: LineageOut})
def lineage(query: LineageQuery) -> dict[str, Any]:
    """Lineage from one dataset, prediction, package or device, downstream or upstream."""
    return api_context().lineage.query(
        dataset=query.dataset,
        prediction=query.prediction,
        package=query.package,
        device=query.device,
        direction=query.direction,
    )


@bp.get("/lineage/openlineage", responses={200: OpenLineageOut})
def openlineage(query: OpenLineageQuery) -> dict[str, Any]:
    """The lineage as OpenLineage run events (compile, rollout, drift evaluation)."""
    return {"events": api_context().lineage.openlineage(query.model)}
