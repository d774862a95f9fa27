"""The repositories the control plane's services use, as Protocols.

Two backends implement them with the same SQL (``store/sql/``): SQLite
(``store/sqlite/``, the embedded default, ``:memory:`` for unit tests) and
PostgreSQL (``store/postgres/``, for several replicas). Every method is one
transaction. Errors come from :mod:`control_plane.errors`: ``NotFound`` for a
missing row, ``Conflict`` for a clash with stored state (duplicate id, token
already used, stage moved meanwhile), ``InvalidInput`` for a bad value or page.
Lists take ``limit``/``offset`` and equality filters and return a :class:`Page`.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from control_plane.core.alerts import Alert, AlertRule
from control_plane.core.rollout_runner import StoredRollout
from control_plane.errors import Conflict
from control_plane.store.notify import ChangeNotifier
from control_plane.store.records import (
    DEFAULT_LIMIT,
    AlertDelivery,
    Alias,
    ApiToken,
    AttributionWindow,
    AuditEntry,
    Command,
    CompileJob,
    Device,
    EnrollmentToken,
    FeedbackLabel,
    FunctionAlias,
    Model,
    ModelCard,
    ModelVersion,
    NewDelivery,
    NewDevice,
    NewUpload,
    NewWindow,
    Package,
    Page,
    RolloutRow,
    StoredAlert,
    StoredAlertRule,
    StoredCapture,
    StoredWindow,
    Upload,
    UploadBatch,
)


class RevisionConflict(Conflict):
    """A compare-and-set lost: the row moved to another revision meanwhile (retry)."""


class DeviceRepo(Protocol):
    def enroll(self, device: NewDevice, token_hash: str, at: float) -> Device:
        """Use an enrollment token and add the device, atomically.

        Raises NotFound (unknown token), Conflict (token used, expired, bound to
        another device; device already enrolled).
        """
        ...

    def add(self, device: NewDevice, at: float) -> Device: ...
    def get(self, device_id: str) -> Device: ...
    def find(self, device_id: str) -> Device | None: ...
    def revoked_ids(self) -> list[str]: ...
    def list(
        self,
        *,
        status: str | None = None,
        profile_id: str | None = None,
        labels: Mapping[str, str] | None = None,
        limit: int = DEFAULT_LIMIT,
        offset: int = 0,
    ) -> Page[Device]: ...
    def revoke(self, device_id: str, at: float) -> Device: ...
    def touch(self, device_id: str, at: float) -> None: ...
    def record_activity(
        self, seen: Mapping[str, float], refused: Mapping[str, int] | None = None
    ) -> None:
        """In one transaction: last-seen times (never moved back) and quota refusals to add.

        Unknown device ids are skipped (a device may be gone by the time a batch is written).
        """
        ...

    def set_labels(self, device_id: str, labels: Mapping[str, str]) -> Device: ...
    def report(
        self,
        device_id: str,
        *,
        agent_version: str | None = None,
        profile_id: str | None = None,
        slots: Mapping[str, Any] | None = None,
    ) -> Device: ...


class EnrollmentTokenRepo(Protocol):
    def add(
        self, token_hash: str, device_id: str | None, created_at: float, expires_at: float | None
    ) -> EnrollmentToken: ...
    def get(self, token_hash: str) -> EnrollmentToken: ...
    def list(
        self, *, unused_only: bool = False, limit: int = DEFAULT_LIMIT, offset: int = 0
    ) -> Page[EnrollmentToken]: ...


class CommandRepo(Protocol):
    def add(
        self,
        device_id: str,
        kind: str,
        body: Mapping[str, Any],
        at: float,
        *,
        execution_key: str | None = None,
        rollout_id: str | None = None,
    ) -> Command:
        """Queue a command with the device's next execution version.

        With an ``execution_key`` (a rollout's ``rollout:device:attempt``) at most one
        command is ever queued per key: the same key again returns the stored command.
        """
        ...

    def get(self, command_id: str) -> Command: ...
    def pending(self, device_id: str | None = None) -> list[Command]:
        """Pending commands of active devices, by device and execution version."""
        ...

    def ack(
        self, command_id: str, device_id: str, ok: bool, result: Mapping[str, Any], at: float
    ) -> Command:
        """Record the device's ack; a second ack changes nothing."""
        ...

    def sent_package(self, device_id: str, sha256: str) -> bool:
        """Whether a deploy command for package ``sha256`` was ever sent to the device."""
        ...

    def list(
        self,
        *,
        device_id: str | None = None,
        status: str | None = None,
        kind: str | None = None,
        limit: int = DEFAULT_LIMIT,
        offset: int = 0,
    ) -> Page[Command]: ...


class PackageRepo(Protocol):
    def put(self, package: Package) -> Package:
        """Register a package; the same sha256 again returns the stored row."""
        ...

    def get(self, sha256: str) -> Package: ...
    def find(self, model_name: str, model_version: str, profile_id: str) -> Package | None: ...
    def list(
        self,
        *,
        model_name: str | None = None,
        model_version: str | None = None,
        profile_id: str | None = None,
        limit: int = DEFAULT_LIMIT,
        offset: int = 0,
    ) -> Page[Package]: ...


class UploadRepo(Protocol):
    def add(
        self,
        device_id: str,
        items: Sequence[NewUpload],
        transport: str,
        at: float,
        windows: Mapping[int, NewWindow] | None = None,
    ) -> list[int]:
        """Store each (device, seq) once; returns the sequence numbers new to the store.

        ``windows`` (by seq) are the decoded telemetry windows, indexed in the same
        transaction as their raw upload (and only when the upload is new).
        """

    def add_group(self, batches: Sequence[UploadBatch], at: float) -> list[list[int]]:
        """Several devices' uploads in one transaction; per batch what :meth:`add` answers."""
        ...

    def list(
        self,
        *,
        device_id: str | None = None,
        kind: str | None = None,
        since: float | None = None,
        limit: int = DEFAULT_LIMIT,
        offset: int = 0,
    ) -> Page[Upload]: ...


class MonitoringRepo(Protocol):
    def windows(
        self,
        *,
        model_name: str,
        model_version: str | None = None,
        device_id: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[StoredWindow]:
        """Every indexed window of a model (version, device, started in [since, until))."""
        ...

    def window_counts(self) -> dict[tuple[str, str], tuple[int, int]]:
        """(windows, rows scored) per (model, version), over everything ingested."""
        ...

    def received(self, *, model_name: str, device_id: str, since: float) -> list[StoredWindow]:
        """A device's windows and rollups of a model received at or after ``since`` (a
        rollup's ``received_at`` is its newest window's): what the rollout gates read."""
        ...

    def captures(self, prediction_ids: Sequence[str]) -> list[StoredCapture]: ...
    def version_captures(
        self, model_name: str, model_version: str, since: float | None = None
    ) -> list[StoredCapture]: ...
    def put_feedback(self, labels: Sequence[FeedbackLabel]) -> None:
        """Store labels by prediction id (a later label for the same id replaces it)."""
        ...

    def feedback(self, prediction_ids: Sequence[str]) -> list[FeedbackLabel]: ...
    def reporting_devices(self, since: float) -> dict[str, set[str]]:
        """Per model, the devices with a window started at or after ``since``."""
        ...

    def downsample(
        self, before: float, bucket_seconds: float, limit: int = 5000
    ) -> tuple[int, int]:
        """Merge the windows started before ``before`` into rollups per (device, package,
        ``bucket_seconds`` bucket), exactly (counts and histograms add, KLL sketches merge),
        deleting the merged windows in the same transaction; at most ``limit`` windows a call.
        Returns (windows merged, rollups written)."""
        ...

    def drop_rollups(self, before: float) -> int:
        """Delete the rollups whose bucket ended before ``before``; how many went."""
        ...


class RetentionRepo(Protocol):
    """Pruning of raw uploads and captures (exactly-once kept through ``pruned_uploads``)."""

    def prune_uploads(self, before: float, limit: int = 5000) -> int:
        """Delete up to ``limit`` raw uploads received before ``before``; their (device, seq)
        stay known, so a resend is a duplicate. How many went."""
        ...

    def pruned_uploads(self, device_id: str) -> list[tuple[int, int]]:
        """The [lo, hi] ranges of the device's seqs received and pruned."""
        ...

    def prune_captures(self, before: float, limit: int = 5000) -> tuple[int, int]:
        """Delete up to ``limit`` captures predicted before ``before`` with their explanations
        and the labels left without a capture; (captures, labels) deleted."""
        ...

    def prune_labels(self, before: float, limit: int = 5000) -> int:
        """Delete up to ``limit`` labels received before ``before`` that no capture has."""
        ...


class AlertRepo(Protocol):
    """The alert book (pending, firing, resolved; acknowledged) and the notification outbox."""

    def live(self) -> builtins.list[StoredAlert]:
        """Pending and firing alerts, oldest first."""
        ...

    def save(
        self,
        alerts: Sequence[Alert],
        gone: Sequence[str],
        deliveries: Sequence[NewDelivery],
        at: float,
    ) -> builtins.list[str]:
        """In one transaction: upsert ``alerts`` (by short id; an acknowledgement is kept; the
        rule and severity are the ones the alert was last evaluated under), delete the
        pending alerts ``gone`` (breach over before firing), queue ``deliveries`` of the
        alerts whose stored state this save changed (a transition another replica saved
        first is not queued again). Returns the queued delivery ids."""
        ...

    def get(self, alert_id: str) -> StoredAlert: ...
    def list(
        self,
        *,
        state: str | None = None,
        model: str | None = None,
        version: str | None = None,
        severity: str | None = None,
        rule: str | None = None,
        limit: int = DEFAULT_LIMIT,
        offset: int = 0,
    ) -> Page[StoredAlert]:
        """Most recently changed first."""
        ...

    def acknowledge(self, alert_id: str, by: str, at: float) -> StoredAlert:
        """NotFound for an unknown id, Conflict unless firing; a second ack keeps the first."""
        ...

    def firing_gates(self, model: str, version: str) -> builtins.list[StoredAlert]:
        """Firing alerts of a rule that gates rollouts, on this model version."""
        ...

    def counts(self) -> dict[tuple[str, str, str], int]:
        """Live alerts per (rule, severity, state)."""
        ...

    def due_deliveries(self, now: float, limit: int = 100) -> builtins.list[AlertDelivery]: ...
    def claim_due(
        self, now: float, lease_s: float = 60.0, limit: int = 100
    ) -> builtins.list[AlertDelivery]:
        """The due deliveries this caller wins (each pushed ``lease_s`` ahead, so another
        replica skips it; due again after the lease if its attempt is never recorded)."""
        ...

    def delivery_attempted(
        self, delivery_id: str, at: float, error: str | None, retry_at: float | None
    ) -> AlertDelivery:
        """Record an attempt: delivered (no error), due again at ``retry_at``, or failed."""
        ...

    def deliveries(
        self,
        *,
        alert_id: str | None = None,
        state: str | None = None,
        limit: int = DEFAULT_LIMIT,
        offset: int = 0,
    ) -> Page[AlertDelivery]: ...
    def delivery_counts(self) -> dict[tuple[str, str], int]:
        """Deliveries per (channel, state)."""
        ...


class InsightRepo(Protocol):
    """Explanations, attribution windows and the reads lineage needs (migration 0006)."""

    def explanation(self, prediction_id: str, device_id: str) -> dict[str, Any] | None: ...
    def put_explanation(
        self, prediction_id: str, device_id: str, sha256: str, body: Mapping[str, Any], at: float
    ) -> None: ...
    def reference(self, sha256: str) -> tuple[int, dict[str, float]] | None: ...
    def put_reference(
        self, sha256: str, rows: int, mean_abs: Mapping[str, float], at: float
    ) -> None: ...
    def put_window(self, window: AttributionWindow) -> None: ...
    def windows(
        self,
        *,
        model_name: str,
        model_version: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> builtins.list[AttributionWindow]: ...
    def window_starts(self, sha256: str) -> set[float]: ...
    def capture_counts(self, since: float, until: float) -> dict[str, int]: ...
    def capture_ids(self, sha256: str, since: float, until: float) -> builtins.list[str]: ...
    def capture(self, prediction_id: str) -> builtins.list[StoredCapture]: ...
    def running_packages(self) -> builtins.list[tuple[str, str, str, float]]: ...


class AuditRepo(Protocol):
    def add(
        self,
        actor: str,
        action: str,
        subject: str,
        at: float,
        *,
        before: Mapping[str, Any] | None = None,
        after: Mapping[str, Any] | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> AuditEntry: ...
    def list(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        subject: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = DEFAULT_LIMIT,
        offset: int = 0,
    ) -> Page[AuditEntry]:
        """Newest first."""
        ...


class ModelRepo(Protocol):
    def add(self, name: str, description: str, owner: str, at: float) -> Model: ...
    def get(self, name: str) -> Model: ...
    def list(
        self, *, owner: str | None = None, limit: int = DEFAULT_LIMIT, offset: int = 0
    ) -> Page[Model]: ...


class VersionRepo(Protocol):
    def add(
        self, model: str, version: str, card: ModelCard, source_sha256: str | None, at: float
    ) -> ModelVersion:
        """Register an immutable version (stage ``registered``); Conflict if it exists."""
        ...

    def get(self, model: str, version: str) -> ModelVersion: ...
    def list(
        self, model: str, *, stage: str | None = None, limit: int = DEFAULT_LIMIT, offset: int = 0
    ) -> Page[ModelVersion]: ...
    def set_stage(
        self, model: str, version: str, expected: str, stage: str, at: float
    ) -> ModelVersion:
        """Move the stage from ``expected`` (compare-and-set; Conflict if it moved meanwhile)."""
        ...


class AliasRepo(Protocol):
    def set(self, model: str, alias: str, version: str, at: float) -> Alias:
        """Point ``alias`` at ``version`` (NotFound if the version is not registered)."""
        ...

    def get(self, model: str, alias: str) -> Alias: ...
    def list(self, model: str) -> list[Alias]: ...
    def delete(self, model: str, alias: str) -> None: ...


class AlertRuleRepo(Protocol):
    """The operators' alert rules per model (migration 0008); rules are checked by the
    service (``core/alert_rules.py``) before they reach the store."""

    def put(
        self, model: str, rule: AlertRule, enabled: bool, by: str, at: float
    ) -> StoredAlertRule:
        """Create or replace the rule (model, ``rule.name``); ``created_at`` is kept."""
        ...

    def find(self, model: str, name: str) -> StoredAlertRule | None: ...
    def list(self, model: str | None = None) -> builtins.list[StoredAlertRule]:
        """By model, then name (every model's when ``model`` is None)."""
        ...

    def delete(self, model: str, name: str) -> StoredAlertRule:
        """Remove the rule and return it; NotFound naming it when there is none."""
        ...


class FunctionAliasRepo(Protocol):
    """Function aliases (``FUNCTION:ALIAS``) and their traffic splits; ``routes`` are
    validated by the service (``core/function_alias.py``) before they reach the store."""

    def put(
        self,
        name: str,
        model: str,
        routes: Mapping[str, int],
        telemetry_device: str,
        at: float,
        *,
        expected_revision: int | None = None,
    ) -> FunctionAlias:
        """Create or replace; with ``expected_revision`` only if the alias is still at it
        (RevisionConflict otherwise; 0 means "must not exist yet"). Every version of
        ``routes`` must be registered (NotFound naming it)."""
        ...

    def get(self, name: str) -> FunctionAlias: ...
    def find(self, name: str) -> FunctionAlias | None: ...
    def list(
        self, *, model: str | None = None, limit: int = DEFAULT_LIMIT, offset: int = 0
    ) -> Page[FunctionAlias]: ...


class ApiTokenRepo(Protocol):
    def add(
        self,
        name: str,
        token_hash: str,
        role: str,
        created_by: str,
        at: float,
        expires_at: float | None = None,
    ) -> ApiToken: ...
    def get(self, token_id: str) -> ApiToken: ...
    def by_hash(self, token_hash: str) -> ApiToken | None: ...
    def list(
        self,
        *,
        role: str | None = None,
        include_revoked: bool = False,
        limit: int = DEFAULT_LIMIT,
        offset: int = 0,
    ) -> Page[ApiToken]: ...
    def revoke(self, token_id: str, at: float) -> ApiToken: ...
    def touch(self, token_id: str, at: float) -> None: ...


class CompileJobRepo(Protocol):
    def add(
        self, model: str, version: str, profiles: Sequence[str], requested_by: str, at: float
    ) -> CompileJob: ...
    def get(self, job_id: str) -> CompileJob: ...
    def list(
        self,
        *,
        state: str | None = None,
        model: str | None = None,
        limit: int = DEFAULT_LIMIT,
        offset: int = 0,
    ) -> Page[CompileJob]: ...
    def claim(self, worker: str, at: float) -> CompileJob | None:
        """Take the oldest queued job (``running``); None when there is none to take."""
        ...

    def progress(self, job_id: str, progress: float, log: str = "") -> CompileJob:
        """Set progress (0..1) and append ``log`` to a running job."""
        ...

    def finish(
        self,
        job_id: str,
        state: str,
        at: float,
        *,
        report: Mapping[str, Any] | None = None,
        error: str | None = None,
    ) -> CompileJob: ...


class RolloutRepo(Protocol):
    """Rollouts; implements the engine's ``RolloutStore`` port (``core/rollout_runner.py``).

    ``state`` is the engine's ``Rollout.to_dict()``; its ``spec.model``, ``spec.version``,
    ``phase``, ``created_at`` and ``updated_at`` are copied into columns for listing.
    """

    def create(self, rollout_id: str, state: Mapping[str, Any], outbox: Sequence[Any]) -> int:
        """Store a new rollout at revision 1 (Conflict if the id exists)."""
        ...

    def load(self, rollout_id: str) -> StoredRollout: ...
    def get(self, rollout_id: str) -> RolloutRow: ...
    def save(
        self,
        rollout_id: str,
        state: Mapping[str, Any],
        outbox: Sequence[Mapping[str, Any]],
        expected_revision: int,
    ) -> int:
        """Replace the state and append to the outbox if the revision is still
        ``expected_revision`` (RevisionConflict otherwise); returns the new revision."""
        ...

    def clear_outbox(self, rollout_id: str, upto_revision: int) -> None:
        """Empty the outbox if the rollout is still at ``upto_revision`` (else keep it:
        a later save appended to it, and applying twice is idempotent)."""
        ...

    def list(
        self,
        *,
        phase: str | None = None,
        model: str | None = None,
        limit: int = DEFAULT_LIMIT,
        offset: int = 0,
    ) -> Page[RolloutRow]:
        """Newest first."""
        ...

    def ids_in_phases(
        self, phases: Sequence[str], *, dynamic_tail: bool | None = None
    ) -> builtins.list[str]:
        """Ids of the rollouts in ``phases``, oldest first; ``dynamic_tail=True`` keeps only
        those whose spec has the dynamic tail on."""
        ...

    def unfed_acks(self, rollout_id: str) -> builtins.list[Command]:
        """The rollout's acked commands whose outcome was not yet fed to the engine."""
        ...

    def mark_fed(self, command_ids: Sequence[str], at: float) -> None: ...
    def installing_elsewhere(self, rollout_id: str) -> int:
        """Pending deploy commands of other rollouts (the fleet-wide disruption budget)."""
        ...


class Repositories(Protocol):
    """Every repository over one database, with its change notifier."""

    devices: DeviceRepo
    enrollment_tokens: EnrollmentTokenRepo
    commands: CommandRepo
    packages: PackageRepo
    uploads: UploadRepo
    monitoring: MonitoringRepo
    insights: InsightRepo
    audit: AuditRepo
    models: ModelRepo
    versions: VersionRepo
    aliases: AliasRepo
    function_aliases: FunctionAliasRepo
    api_tokens: ApiTokenRepo
    compile_jobs: CompileJobRepo
    rollouts: RolloutRepo
    alerts: AlertRepo
    alert_rules: AlertRuleRepo
    retention: RetentionRepo

    @property
    def notifier(self) -> ChangeNotifier: ...

    def schema_version(self) -> int: ...
    def close(self) -> None: ...
