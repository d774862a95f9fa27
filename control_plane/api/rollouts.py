"""``/api/v1/rollouts``: staged rollouts (create, read with waves and gates, operator commands).

Viewer reads; operator creates and commands (``api/auth.py``). Every change is
audited with the caller's name; what the engine decides is audited as ``rollouts``.
"""

from __future__ import annotations

from typing import Any, Literal

from flask_openapi3.blueprint import APIBlueprint
from flask_openapi3.models.tag import Tag
from pydantic import BaseModel, ConfigDict, Field

from control_plane.api.auth import current_principal
from control_plane.api.context import api_context, paged
from control_plane.api.schemas import NAME, PageOut, Paging, Strict
from control_plane.core.rollout import summary
from control_plane.core.rollout_model import Rollout
from control_plane.services.rollouts import Verb

SECURITY: list[dict[str, list[str]]] = [{"bearer": []}]
bp = APIBlueprint(
    "rollouts",
    __name__,
    url_prefix="/api/v1",
    abp_tags=[Tag(name="rollouts", description="staged, gated rollouts (docs/rollouts.md)")],
    abp_security=SECURITY,
)

Phase = Literal["running", "paused", "completed", "aborted", "rolled_back"]


class RolloutIn(BaseModel):
    """The rollout spec (docs/rollouts.md, 'The spec'); every field is validated, by name."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(pattern=NAME)
    version: str = Field(pattern=NAME)
    target: dict[str, Any] = Field(
        description='{"kind": "devices", "selector": {label: value}} or '
        '{"kind": "alias", "alias": "FUNCTION:ALIAS"}'
    )
    waves: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=100,
        description='devices: [{"count": 5}, {"percent": 100}]; alias: [{"traffic": 5}, …, '
        '{"traffic": 100}]',
    )


class RolloutPath(Strict):
    rollout_id: str = Field(min_length=1, max_length=64)


class RolloutQuery(Paging):
    phase: Phase | None = None
    model: str | None = Field(None, pattern=NAME)


class CommandIn(Strict):
    reason: str = Field("", max_length=1000)


class RollbackIn(CommandIn):
    scope: Literal["wave", "all"] = "all"


class RolloutSummary(BaseModel):
    id: str
    model: str
    version: str
    target: str
    phase: str
    reason: str | None
    current_wave: int
    traffic: int | None
    waves: list[dict[str, Any]]
    updated_at: float


class RolloutOut(BaseModel):
    summary: RolloutSummary
    waves: list[dict[str, Any]] = Field(
        description="every wave with its gates' verdicts, reasons and numbers, and its readings"
    )
    devices: dict[str, dict[str, Any]] = Field(description="per device: wave, status, attempts")
    spec: dict[str, Any]


class RolloutList(PageOut):
    items: list[RolloutSummary]


def rollout_view(rollout: Rollout) -> dict[str, Any]:
    state = rollout.to_dict()
    return {
        "summary": summary(rollout),
        "waves": state["waves"],
        "devices": state["devices"],
        "spec": state["spec"],
    }


@bp.post("/rollouts", responses={201: RolloutOut})
def create_rollout(body: RolloutIn) -> tuple[dict[str, Any], int]:
    """Start a rollout: 400 naming a bad spec field, 409 naming a profile without a package."""
    spec = body.model_dump(mode="json")
    rollout = api_context().rollouts.create(spec, current_principal())
    return rollout_view(rollout), 201


@bp.get("/rollouts", responses={200: RolloutList})
def list_rollouts(query: RolloutQuery) -> dict[str, Any]:
    """Rollouts, newest first, as summaries (per-wave device counts and gate verdicts)."""
    items, page = api_context().rollouts.list(
        phase=query.phase, model=query.model, limit=query.limit, offset=query.offset
    )
    return paged(page, items)


@bp.get("/rollouts/<rollout_id>", responses={200: RolloutOut})
def get_rollout(path: RolloutPath) -> dict[str, Any]:
    """One rollout: waves (gates with their numbers, readings), every device's state."""
    return rollout_view(api_context().rollouts.get(path.rollout_id))


def _act(rollout_id: str, verb: Verb, body: CommandIn) -> dict[str, Any]:
    scope = body.scope if isinstance(body, RollbackIn) else "all"
    rollout = api_context().rollouts.act(
        rollout_id, verb, current_principal(), reason=body.reason, scope=scope
    )
    return rollout_view(rollout)


@bp.post("/rollouts/<rollout_id>/pause", responses={200: RolloutOut})
def pause_rollout(path: RolloutPath, body: CommandIn) -> dict[str, Any]:
    """Stop dispatching (installs under way finish); 409 unless running."""
    return _act(path.rollout_id, "pause", body)


@bp.post("/rollouts/<rollout_id>/resume", responses={200: RolloutOut})
def resume_rollout(path: RolloutPath, body: CommandIn) -> dict[str, Any]:
    """Continue a paused rollout (a wave failed by a gate bakes again); 409 unless paused."""
    return _act(path.rollout_id, "resume", body)


@bp.post("/rollouts/<rollout_id>/abort", responses={200: RolloutOut})
def abort_rollout(path: RolloutPath, body: CommandIn) -> dict[str, Any]:
    """Stop where it is, without rolling back (``rollback`` is the way back)."""
    return _act(path.rollout_id, "abort", body)


@bp.post("/rollouts/<rollout_id>/rollback", responses={200: RolloutOut})
def rollback_rollout(path: RolloutPath, body: RollbackIn) -> dict[str, Any]:
    """Roll back the current wave (``scope: wave``) or every touched device (``all``)."""
    return _act(path.rollout_id, "rollback", body)


@bp.post("/rollouts/<rollout_id>/approve", responses={200: RolloutOut})
def approve_rollout(path: RolloutPath, body: CommandIn) -> dict[str, Any]:
    """Approve the wave awaiting approval; 409 when none is."""
    return _act(path.rollout_id, "approve", body)
