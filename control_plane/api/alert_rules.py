"""``/api/v1/alert-rules``: the alert rules of a model, read and changed (docs/monitoring.md).

Viewer reads the rules in effect (``source``: ``default`` or ``stored``); operator sets
(``PUT``, a complete rule: fields left out come from the default of the same name) and
deletes (``DELETE``: back to the default, or gone). Each change is audited with the
caller's name and the rule before and after.
"""

from __future__ import annotations

from typing import Any

from flask_openapi3.blueprint import APIBlueprint
from flask_openapi3.models.tag import Tag
from pydantic import BaseModel, Field

from control_plane.api.auth import current_principal
from control_plane.api.context import api_context
from control_plane.api.schemas import NAME, Strict
from control_plane.core.alert_rules import MAX_FOR_S, MAX_WINDOW_S, RULE_NAME, Metric
from control_plane.core.alerts import Comparison, Severity

SECURITY: list[dict[str, list[str]]] = [{"bearer": []}]
bp = APIBlueprint(
    "alert_rules",
    __name__,
    url_prefix="/api/v1",
    abp_tags=[Tag(name="alert rules", description="alert rules per model: defaults, overrides")],
    abp_security=SECURITY,
)


class RulesQuery(Strict):
    model: str = Field(pattern=NAME)


class RulePath(Strict):
    model: str = Field(pattern=NAME)
    rule: str = Field(pattern=RULE_NAME, description="the rule's name, e.g. error_rate")


class AlertRuleIn(Strict):
    """A rule for the model; a field left out is the default rule's of the same name (a rule
    that names no default needs ``metric`` and ``threshold``)."""

    metric: Metric | None = Field(None, description="a metric the alert evaluation reads")
    threshold: float | None = Field(None, allow_inf_nan=False)
    comparison: Comparison | None = Field(None, description="value COMPARISON threshold breaches")
    window_s: float | None = Field(None, gt=0, le=MAX_WINDOW_S, description="averaging window")
    for_s: float | None = Field(None, ge=0, le=MAX_FOR_S, description="breach lasts this long")
    severity: Severity | None = None
    gates_rollout: bool | None = Field(None, description="firing blocks the version's rollout")
    retrain: bool | None = Field(None, description="firing sends a retraining request")
    enabled: bool = Field(True, description="false: the rule (or the default it replaces) is off")


class RuleFields(BaseModel):
    name: str
    metric: str
    threshold: float
    comparison: str
    window_s: float
    for_s: float
    severity: str
    retrain: bool
    gates_rollout: bool


class AlertRuleOut(RuleFields):
    model: str
    enabled: bool
    source: str = Field(description="default (the code's rule) or stored (an operator's)")
    overrides_default: bool = Field(description="a stored rule replacing the default's")
    default: RuleFields | None = Field(description="the code's rule of this name, if any")
    updated_by: str | None
    updated_at: float | None


class AlertRuleList(BaseModel):
    model: str
    items: list[AlertRuleOut]


class RemovedRule(RuleFields):
    enabled: bool


class AlertRuleDeleted(BaseModel):
    model: str
    name: str
    removed: RemovedRule
    effective: AlertRuleOut | None = Field(description="the default now in effect, or none")


@bp.get("/alert-rules", responses={200: AlertRuleList})
def list_alert_rules(query: RulesQuery) -> dict[str, Any]:
    """The model's rules in effect, disabled ones included (404 for an unknown model)."""
    return {"model": query.model, "items": api_context().alerts.rules.effective(query.model)}


@bp.put("/alert-rules/<model>/<rule>", responses={200: AlertRuleOut})
def set_alert_rule(path: RulePath, body: AlertRuleIn) -> dict[str, Any]:
    """Store a rule for the model (replacing the default of its name, or added): 400 a
    missing metric/threshold for a new rule, 404 an unknown model; audited."""
    given = body.model_dump(exclude={"enabled"}, exclude_none=True)
    return api_context().alerts.rules.set(
        path.model, path.rule, given, body.enabled, current_principal()
    )


@bp.delete("/alert-rules/<model>/<rule>", responses={200: AlertRuleDeleted})
def delete_alert_rule(path: RulePath) -> dict[str, Any]:
    """Remove a stored rule: the default of its name applies again, or the rule is gone
    (404 when the model has no stored rule of this name); audited."""
    return api_context().alerts.rules.delete(path.model, path.rule, current_principal())
