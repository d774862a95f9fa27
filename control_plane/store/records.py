"""What the repositories return: frozen rows, a page of them, and the fields a caller supplies.

Times are seconds since the epoch (float), JSON-shaped fields are plain dicts;
nothing here knows SQL, so services and the core can use these types freely.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from control_plane.core.alerts import Alert, AlertRule
from control_plane.core.lifecycle import STAGES as STAGES  # the lifecycle owns the names

T = TypeVar("T")

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000

DEVICE_STATUSES = frozenset({"active", "revoked"})
COMMAND_STATUSES = frozenset({"pending", "ok", "failed"})
ROLES = ("viewer", "operator", "admin")  # each role can do what the ones before it can
JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled")
JOB_FINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list; ``next_offset`` is None on the last page."""

    items: list[T]
    next_offset: int | None = None


@dataclass(frozen=True)
class Device:
    id: str
    token_hash: str
    status: str
    host: dict[str, Any]
    labels: dict[str, str]
    profile_id: str | None
    agent_version: str | None
    slots: dict[str, Any]
    enrolled_at: float
    revoked_at: float | None
    last_seen: float | None
    next_version: int
    uploads_refused: int = 0  # uploads refused over the device's ingest quota


@dataclass(frozen=True)
class NewDevice:
    id: str
    token_hash: str
    host: Mapping[str, Any] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    profile_id: str | None = None
    agent_version: str | None = None


@dataclass(frozen=True)
class EnrollmentToken:
    token_hash: str
    device_id: str | None  # bound to this device, or None for any
    created_at: float
    expires_at: float | None
    used_by: str | None
    used_at: float | None


@dataclass(frozen=True)
class Command:
    id: str
    device_id: str
    execution_version: int
    kind: str
    body: dict[str, Any]
    status: str
    created_at: float
    acked_at: float | None
    result: dict[str, Any] | None


@dataclass(frozen=True)
class Package:
    sha256: str
    package_id: str
    model_name: str
    model_version: str
    profile_id: str
    release: int
    size_bytes: int
    path: str
    manifest: dict[str, Any]
    created_at: float


@dataclass(frozen=True)
class NewUpload:
    seq: int
    kind: str
    body_json: str


@dataclass(frozen=True)
class UploadBatch:
    """One device's upload, as a group commit stores it beside other devices' uploads."""

    device_id: str
    items: Sequence[NewUpload]
    transport: str
    windows: Mapping[int, NewWindow] = field(default_factory=dict)


@dataclass(frozen=True)
class Upload:
    device_id: str
    seq: int
    kind: str
    body_json: str
    received_at: float
    transport: str


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: float
    actor: str
    action: str
    subject: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    detail: dict[str, Any]


@dataclass(frozen=True)
class Model:
    name: str
    description: str
    owner: str
    created_at: float


@dataclass(frozen=True)
class ModelCard:
    """What a version is for and how it was made (immutable with the version)."""

    intended_use: str
    training_data: str
    owner: str
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelVersion:
    model: str
    version: str
    card: ModelCard
    source_sha256: str | None
    stage: str
    created_at: float
    stage_changed_at: float


@dataclass(frozen=True)
class Alias:
    model: str
    alias: str
    version: str
    previous_version: str | None  # where it pointed before the last move
    updated_at: float


@dataclass(frozen=True)
class FunctionAlias:
    """``FUNCTION:ALIAS`` → a traffic split over versions of ``model`` (version → percent)."""

    name: str
    model: str
    routes: dict[str, int]
    telemetry_device: str  # the device id the function's containers report telemetry under
    revision: int
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class ApiToken:
    id: str
    name: str
    token_hash: str
    role: str
    created_by: str
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    last_used_at: float | None


@dataclass(frozen=True)
class CompileJob:
    id: str
    model: str
    version: str
    profiles: Sequence[str]
    state: str
    progress: float
    log: str
    report: dict[str, Any] | None
    error: str | None
    requested_by: str
    worker: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None


# --- monitoring -------------------------------------------------------------------------


@dataclass(frozen=True)
class NewCapture:
    prediction_id: str
    at: float
    outputs: Mapping[str, Any]
    inputs: Mapping[str, Any] = field(default_factory=dict)  # sealed at rest with the outputs


@dataclass(frozen=True)
class NewWindow:
    """A telemetry window decoded at ingest: its index columns and its sketches."""

    model_name: str
    model_version: str
    package_id: str | None
    started_at: float
    ended_at: float
    bucket_start: float
    requests: int
    rows: int
    errors: int
    invalid: int
    histograms_json: str  # {"inputs": [...], "outputs": [...]}, as JSON (stored as is)
    latency_json: str  # the latency summary with its KLL sketch, as JSON
    captures: Sequence[NewCapture] = ()
    alias: str | None = None  # the function alias a function container stamped


@dataclass(frozen=True)
class StoredWindow:
    device_id: str
    seq: int
    model_name: str
    model_version: str
    package_id: str | None
    package_sha256: str | None  # the catalog package whose package id the window names
    profile_id: str | None
    started_at: float
    ended_at: float
    bucket_start: float
    requests: int
    rows: int
    errors: int
    invalid: int
    histograms: dict[str, Any]
    latency: dict[str, Any]
    received_at: float
    merged: int = 1  # windows merged into this row (retention rollups; seq is then 0)
    bucket_seconds: float = 0.0  # a rollup's time bucket; 0 for a window as uploaded
    alias: str | None = None  # the function alias the window was stamped with

    def folded(self, histograms: bool = True) -> dict[str, Any]:
        """The window in the shape ``WindowAccumulator`` folds in: its counts and latency
        sketch, and (``histograms``) its feature histograms."""
        counts = {"requests": self.requests, "rows": self.rows, "errors": self.errors,
                  "invalid": self.invalid, "latency_ms": self.latency}  # fmt: skip
        return {**self.histograms, **counts} if histograms else counts


@dataclass(frozen=True)
class StoredCapture:
    prediction_id: str
    device_id: str
    seq: int
    model_name: str
    model_version: str
    package_sha256: str | None
    at: float
    outputs: dict[str, Any]
    inputs: dict[str, Any] = field(default_factory=dict)  # opened from the sealed sample


@dataclass(frozen=True)
class AttributionWindow:
    """Mean |SHAP| per feature of one package's captures in one time window, and its
    attribution drift against the package's reference attributions."""

    package_sha256: str
    window_start: float
    window_seconds: float
    model_name: str
    model_version: str
    captures: int  # captures in the window
    rows_explained: int  # within the budget
    mean_abs: dict[str, float]
    drift: dict[str, Any]
    created_at: float


@dataclass(frozen=True)
class FeedbackLabel:
    prediction_id: str
    label: float
    received_at: float
    actor: str


@dataclass(frozen=True)
class RolloutRow:
    """A stored rollout: the engine's state (``control_plane.core.rollout_model.Rollout``
    as a dict), its revision (compare-and-set) and the outbox of actions not applied yet."""

    id: str
    model: str
    version: str
    phase: str
    state: dict[str, Any]
    revision: int
    outbox: list[dict[str, Any]]
    created_at: float
    updated_at: float


ALERT_STATES = ("pending", "firing", "resolved")
DELIVERY_STATES = ("pending", "delivered", "failed")


@dataclass(frozen=True)
class StoredAlert:
    """An alert as stored: ``alert`` is the core's (rule, labels, lifecycle); ``id`` is short."""

    id: str
    alert: Alert
    acknowledged_at: float | None
    updated_at: float


@dataclass(frozen=True)
class StoredAlertRule:
    """An operator's alert rule for one model (``rule.match`` is ``model=<model>``): it
    replaces the default rule of its name or adds one; ``enabled`` False disables it."""

    model: str
    rule: AlertRule
    enabled: bool
    updated_by: str
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class NewDelivery:
    """A notification to send: one (channel, target) of one alert transition."""

    alert_id: str
    channel: str  # "webhook" or "email"
    target: str  # URL or e-mail address
    kind: str  # "alert" or "retraining_request"
    body: Mapping[str, Any]
    max_attempts: int


@dataclass(frozen=True)
class AlertDelivery:
    id: str
    alert_id: str
    channel: str
    target: str
    kind: str
    body: dict[str, Any]
    state: str  # pending (due at next_attempt_at), delivered, failed (attempts exhausted)
    attempts: int
    max_attempts: int
    next_attempt_at: float
    last_error: str | None
    created_at: float
    delivered_at: float | None
