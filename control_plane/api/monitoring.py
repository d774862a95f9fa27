"""Monitoring routes: drift reports, feedback labels, measured accuracy.

``GET /drift`` and ``GET /accuracy`` read (viewer); ``POST /feedback`` stores
labels (operator, audited). The figures come from ``services/monitoring.py``.
"""

from __future__ import annotations

from typing import Any, Literal

from flask_openapi3.blueprint import APIBlueprint
from flask_openapi3.models.tag import Tag
from pydantic import BaseModel, Field

from control_plane.api.auth import current_principal
from control_plane.api.context import api_context, paged
from control_plane.api.schemas import NAME, PageOut, Paging, Strict
from control_plane.services.alerts import alert_view, delivery_view

SECURITY: list[dict[str, list[str]]] = [{"bearer": []}]
bp = APIBlueprint(
    "monitoring",
    __name__,
    url_prefix="/api/v1",
    abp_tags=[Tag(name="monitoring", description="drift, feedback, accuracy, alerts")],
    abp_security=SECURITY,
)


GROUP = r"^[A-Za-z0-9._/-]{1,63}=[^\x00-\x1f]{0,128}$"
GROUP_BY = r"^[A-Za-z0-9._/-]{1,63}$"


class DriftQuery(Strict):
    model: str = Field(pattern=NAME)
    version: str | None = Field(None, pattern=NAME)
    device: str | None = Field(None, min_length=1, max_length=128)
    since: float | None = Field(None, ge=0, le=1e11, description="windows started at or after")
    until: float | None = Field(None, ge=0, le=1e11, description="windows started before")
    group: str | None = Field(
        None,
        pattern=GROUP,
        description="keep devices carrying this label=value (e.g. site=berlin)",
    )
    group_by: str | None = Field(
        None,
        pattern=GROUP_BY,
        description="a report per value of this device label (e.g. site)",
    )
    step_seconds: float | None = Field(
        None, ge=60, le=366 * 86400.0, description="add the sliding drift score per step"
    )
    width: int = Field(3, ge=1, le=1000, description="steps merged by the sliding score")


class DriftOut(BaseModel):
    model: str
    version: str | None
    device_id: str | None
    group: str | None
    group_by: str | None
    since: float | None
    until: float | None
    windows: int
    rows: int
    reports: list[dict[str, Any]] = Field(
        description="per package: its merged windows' figures and the drift report"
    )
    unevaluated: list[dict[str, Any]] = Field(
        description="windows whose package has no reference statistics in the catalog, and why"
    )


class Label(Strict):
    prediction_id: str = Field(min_length=1, max_length=128)
    label: float = Field(allow_inf_nan=False, description="class index or target value")


class FeedbackIn(Strict):
    labels: list[Label] = Field(min_length=1, max_length=10_000)


class FeedbackOut(BaseModel):
    received: int
    matched: int = Field(description="labels joined with a captured prediction")
    unknown_ids: list[str] = Field(
        description="prediction ids no stored capture has (labels kept: a later upload joins)"
    )
    duplicate_ids: list[str]


class AccuracyQuery(Strict):
    model: str = Field(pattern=NAME)
    version: str = Field(pattern=NAME)
    bucket_seconds: float = Field(3600.0, ge=60.0, le=366 * 86400.0)
    device: str | None = Field(None, min_length=1, max_length=128)
    group: str | None = Field(
        None, pattern=GROUP, description="keep devices carrying this label=value (e.g. site=berlin)"
    )
    group_by: str | None = Field(
        None, pattern=GROUP_BY, description="metrics per value of this device label (e.g. site)"
    )


class AccuracyOut(BaseModel):
    model: str
    version: str
    task: str
    output: str
    bucket_seconds: float
    device_id: str | None
    group: str | None
    group_by: str | None
    captures: int
    labelled: int
    buckets: list[dict[str, Any]] = Field(
        description="measured metrics per (group, time bucket of the prediction)"
    )
    groups: list[dict[str, Any]] = Field(
        description="per group over the whole range: captures, labelled, measured accuracy and"
        " macro F1 (or MAE), and the estimated accuracy beside them (classification)"
    )
    estimated: dict[str, Any] | None = Field(
        description="classification: estimated accuracy per bucket from every capture"
        " (confidence-based, labelled estimated; calibrated or uncalibrated)"
    )


class AlertOut(BaseModel):
    id: str
    key: str = Field(description="rule{series labels}@start of the breach")
    rule: str
    metric: str
    severity: str
    threshold: float
    comparison: str
    labels: dict[str, str]
    state: str
    since: float
    value: float
    fired_at: float | None
    resolved_at: float | None
    acknowledged_by: str | None
    acknowledged_at: float | None
    gates_rollout: bool
    retrain: bool


class AlertList(PageOut):
    items: list[AlertOut]


class AlertQuery(Paging):
    state: Literal["pending", "firing", "resolved"] | None = None
    model: str | None = Field(None, pattern=NAME)
    version: str | None = Field(None, pattern=NAME)
    severity: Literal["info", "warning", "critical"] | None = None
    rule: str | None = Field(None, min_length=1, max_length=100)


class AlertPath(Strict):
    alert_id: str = Field(min_length=1, max_length=64)


class DeliveryQuery(Paging):
    alert_id: str | None = Field(None, min_length=1, max_length=64)
    state: Literal["pending", "delivered", "failed"] | None = None


class DeliveryRow(BaseModel):
    id: str
    alert_id: str
    channel: str
    target: str
    kind: str
    state: str
    attempts: int
    max_attempts: int
    next_attempt_at: float
    last_error: str | None
    created_at: float
    delivered_at: float | None


class DeliveryList(PageOut):
    items: list[DeliveryRow]


class DeliveryOut(BaseModel):
    url: str
    channel: str
    kind: str
    alert_id: str
    ok: bool
    error: str | None
    state: str
    attempts: int


class CheckOut(BaseModel):
    readings: int
    transitions: list[AlertOut]
    deliveries: list[DeliveryOut]


@bp.get("/drift", responses={200: DriftOut})
def drift(query: DriftQuery) -> dict[str, Any]:
    """The matching windows merged per package, evaluated against its reference statistics."""
    return api_context().monitoring.drift(
        query.model,
        query.version,
        query.device,
        query.since,
        query.until,
        group=query.group,
        group_by=query.group_by,
        step_seconds=query.step_seconds,
        width=query.width,
    )


@bp.post("/feedback", responses={200: FeedbackOut})
def feedback(body: FeedbackIn) -> dict[str, Any]:
    """True labels for captured predictions; unknown ids are answered back, never dropped."""
    result = api_context().monitoring.add_feedback(
        [(item.prediction_id, item.label) for item in body.labels], current_principal()
    )
    return {
        "received": result.received,
        "matched": result.matched,
        "unknown_ids": list(result.unknown_ids),
        "duplicate_ids": list(result.duplicate_ids),
    }


@bp.get("/accuracy", responses={200: AccuracyOut})
def accuracy(query: AccuracyQuery) -> dict[str, Any]:
    """Measured accuracy and macro F1 (classification) or MAE per device group and bucket of
    prediction time, with the estimated accuracy beside it (classification)."""
    return api_context().monitoring.accuracy(
        query.model, query.version, query.bucket_seconds,
        device_id=query.device, group=query.group, group_by=query.group_by,
    )  # fmt: skip


@bp.get("/alerts", responses={200: AlertList})
def list_alerts(query: AlertQuery) -> dict[str, Any]:
    """Alerts from the store, most recently changed first (filter by state, model, ...)."""
    page = api_context().alerts.list(
        state=query.state, model=query.model, version=query.version, severity=query.severity,
        rule=query.rule, limit=query.limit, offset=query.offset,
    )  # fmt: skip
    return paged(page, [alert_view(s.alert, s) for s in page.items])


@bp.get("/alerts/deliveries", responses={200: DeliveryList})
def list_deliveries(query: DeliveryQuery) -> dict[str, Any]:
    """Notification deliveries (webhook, e-mail): pending retries, delivered, failed."""
    page = api_context().repos.alerts.deliveries(
        alert_id=query.alert_id, state=query.state, limit=query.limit, offset=query.offset
    )
    return paged(page, [delivery_view(d) for d in page.items])


@bp.get("/alerts/<alert_id>", responses={200: AlertOut})
def get_alert(path: AlertPath) -> dict[str, Any]:
    """One alert."""
    stored = api_context().repos.alerts.get(path.alert_id)
    return alert_view(stored.alert, stored)


@bp.post("/alerts/<alert_id>/acknowledge", responses={200: AlertOut})
def acknowledge_alert(path: AlertPath) -> dict[str, Any]:
    """Acknowledge a firing alert (operator, audited): it stays firing until resolved."""
    stored = api_context().alerts.acknowledge(path.alert_id, current_principal())
    return alert_view(stored.alert, stored)


@bp.post("/alerts/evaluate", responses={200: CheckOut})
def evaluate_alerts() -> dict[str, Any]:
    """Evaluate the rules now, store the changes and send what is due (audited)."""
    context = api_context()
    result = context.alerts.evaluate(context.monitoring.clock())
    principal = current_principal()
    context.audit.record(
        principal.name,
        "alerts.evaluate",
        "alerts",
        detail={
            "readings": result.readings,
            "transitions": [
                f"{t.previous}->{t.alert.state} {t.alert.id}" for t in result.transitions
            ],
            "failed_deliveries": sum(1 for d in result.deliveries if not d.ok),
        },
    )
    return {
        "readings": result.readings,
        "transitions": [alert_view(t.alert) for t in result.transitions],
        "deliveries": [
            {"url": d.url, "channel": d.channel, "kind": d.kind, "alert_id": d.alert_id,
             "ok": d.ok, "error": d.error, "state": d.state, "attempts": d.attempts}
            for d in result.deliveries
        ],
    }  # fmt: skip
