"""The API's request and response bodies (pydantic): the OpenAPI document is made from these.

Request models forbid unknown fields (a typo is a 422 naming it, not silently
ignored); response models mirror the store's records.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from control_plane.store.records import DEFAULT_LIMIT, MAX_LIMIT

NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
ALIAS = r"^[a-z][a-z0-9_-]{0,31}$"
SHA256 = r"^[0-9a-f]{64}$"
Role = Literal["viewer", "operator", "admin"]
Stage = Literal["registered", "compiled", "staged", "production", "deprecated", "retired"]
JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Paging(Strict):
    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="items per page")
    offset: int = Field(0, ge=0, le=10**9, description="items to skip")


class PageOut(BaseModel):
    next: str | None = Field(None, description="URL of the next page; null on the last")
    next_offset: int | None = None


# -- paths


class ModelPath(Strict):
    model: str = Field(pattern=NAME)


class VersionPath(ModelPath):
    version: str = Field(pattern=NAME)


class AliasPath(ModelPath):
    alias: str = Field(pattern=ALIAS)


class JobPath(Strict):
    job_id: str = Field(min_length=1, max_length=64)


class PackagePath(Strict):
    sha256: str = Field(pattern=SHA256)


class TokenPath(Strict):
    token_id: str = Field(min_length=1, max_length=64)


# -- models


class ModelIn(Strict):
    name: str = Field(pattern=NAME)
    description: str = Field("", max_length=2000)
    owner: str = Field(min_length=1, max_length=200)


class ModelOut(BaseModel):
    name: str
    description: str
    owner: str
    created_at: float


class ModelQuery(Paging):
    owner: str | None = Field(None, max_length=200)


class ModelList(PageOut):
    items: list[ModelOut]


# -- versions


class CardIn(Strict):
    intended_use: str = Field(min_length=1, max_length=4000)
    training_data: str = Field(min_length=1, max_length=2000, description="a reference")
    owner: str = Field(min_length=1, max_length=200)
    metrics: dict[str, float] = Field(default_factory=dict)


class DataIn(Strict):
    calibration: str | None = Field(None, pattern=SHA256)
    validation: str | None = Field(None, pattern=SHA256)
    reference: str | None = Field(None, pattern=SHA256)
    labels: str | None = Field(None, pattern=SHA256)


class VersionIn(Strict):
    version: str = Field(pattern=NAME)
    card: CardIn
    source_sha256: str | None = Field(None, pattern=SHA256, description="an upload's sha256")
    source_format: Literal["onnx", "pt2"] | None = None
    data: DataIn | None = Field(None, description="uploads by role (sha256)")


class CardOut(BaseModel):
    intended_use: str
    training_data: str
    owner: str
    metrics: dict[str, float]


class VersionOut(BaseModel):
    model: str
    version: str
    card: CardOut
    source_sha256: str | None
    stage: Stage
    created_at: float
    stage_changed_at: float


class VersionQuery(Paging):
    stage: Stage | None = None


class VersionList(PageOut):
    items: list[VersionOut]


class StageIn(Strict):
    stage: Stage
    reason: str = Field("", max_length=2000)
    force: bool = Field(
        False, description="retired: roll back the devices still running it instead of refusing"
    )


# -- aliases


class AliasIn(Strict):
    version: str = Field(pattern=NAME)


class AliasOut(BaseModel):
    model: str
    alias: str
    version: str
    previous_version: str | None
    updated_at: float


class AliasList(BaseModel):
    items: list[AliasOut]


# -- uploads, packages


class UploadOut(BaseModel):
    sha256: str
    size_bytes: int


class PackageOut(BaseModel):
    sha256: str
    package_id: str
    model_name: str
    model_version: str
    profile_id: str
    release: int
    size_bytes: int
    created_at: float
    manifest: dict[str, Any]


class PackageQuery(Paging):
    model: str | None = Field(None, pattern=NAME)
    version: str | None = Field(None, pattern=NAME)
    profile: str | None = Field(None, max_length=200)


class PackageList(PageOut):
    items: list[PackageOut]


# -- compile jobs


class JobIn(Strict):
    model: str = Field(pattern=NAME)
    version: str = Field(pattern=NAME)
    profiles: list[str] = Field(
        default_factory=list, max_length=64, description="profile ids; empty: every profile"
    )


class JobOut(BaseModel):
    id: str
    model: str
    version: str
    profiles: list[str]
    state: JobState
    progress: float
    log: str
    report: dict[str, Any] | None
    error: str | None
    requested_by: str
    worker: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None


class JobQuery(Paging):
    state: JobState | None = None
    model: str | None = Field(None, pattern=NAME)


class JobList(PageOut):
    items: list[JobOut]


# -- tokens, audit, identity


class TokenIn(Strict):
    name: str = Field(min_length=1, max_length=100)
    role: Role
    ttl_seconds: float | None = Field(None, gt=0, le=10 * 365 * 86400)


class TokenOut(BaseModel):
    id: str
    name: str
    role: Role
    created_by: str
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    last_used_at: float | None


class TokenCreated(TokenOut):
    token: str = Field(description="the secret: shown once, store it now")


class TokenQuery(Paging):
    role: Role | None = None
    include_revoked: bool = False


class TokenList(PageOut):
    items: list[TokenOut]


class AuditOut(BaseModel):
    id: int
    at: float
    actor: str
    action: str
    subject: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    detail: dict[str, Any]


class AuditQuery(Paging):
    actor: str | None = Field(None, max_length=200)
    action: str | None = Field(None, max_length=200)
    subject: str | None = Field(None, max_length=400)
    since: float | None = Field(None, ge=0, le=1e11)
    until: float | None = Field(None, ge=0, le=1e11)


class AuditList(PageOut):
    items: list[AuditOut]


class WhoAmI(BaseModel):
    name: str
    role: Role


class Health(BaseModel):
    status: str
    schema_version: int | None = None
