"""API tokens with roles, and compile jobs (claimed by one worker across replicas)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from control_plane.errors import Conflict, InvalidInput, NotFound
from control_plane.store.notify import JOBS, TOKENS
from control_plane.store.records import (
    DEFAULT_LIMIT,
    JOB_FINAL_STATES,
    JOB_STATES,
    ROLES,
    ApiToken,
    CompileJob,
    Page,
)
from control_plane.store.sql.base import Database, Row, Tx, dumps, loads, page


class SqlApiTokenRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add(
        self,
        name: str,
        token_hash: str,
        role: str,
        created_by: str,
        at: float,
        expires_at: float | None = None,
    ) -> ApiToken:
        if role not in ROLES:
            raise InvalidInput(f"role {role!r}: expected one of {list(ROLES)}")
        if expires_at is not None and expires_at <= at:
            raise InvalidInput("an API token must expire after it is created")
        token_id = uuid.uuid4().hex
        with self.db.transaction() as tx:
            if not tx.execute(
                "INSERT INTO api_tokens (id, name, token_hash, role, created_by, created_at,"
                " expires_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (token_hash) DO NOTHING",
                [token_id, name, token_hash, role, created_by, at, expires_at],
            ):
                raise Conflict("an API token with this hash exists")
            tx.changed(TOKENS)
            return ApiToken(**_token_row(tx, token_id))

    def get(self, token_id: str) -> ApiToken:
        with self.db.transaction() as tx:
            return ApiToken(**_token_row(tx, token_id))

    def by_hash(self, token_hash: str) -> ApiToken | None:
        with self.db.transaction() as tx:
            row = tx.row("SELECT * FROM api_tokens WHERE token_hash = ?", [token_hash])
            return None if row is None else ApiToken(**row)

    def list(
        self,
        *,
        role: str | None = None,
        include_revoked: bool = False,
        limit: int = DEFAULT_LIMIT,
        offset: int = 0,
    ) -> Page[ApiToken]:
        extra: list[tuple[str, list[object]]] = (
            [] if include_revoked else [("revoked_at IS NULL", [])]
        )
        with self.db.transaction() as tx:
            rows, more = page(
                tx,
                "SELECT * FROM api_tokens",
                {"role": role},
                "created_at, id",
                limit,
                offset,
                extra,
            )
            return Page([ApiToken(**r) for r in rows], more)

    def revoke(self, token_id: str, at: float) -> ApiToken:
        with self.db.transaction() as tx:
            _token_row(tx, token_id)
            if tx.execute(
                "UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                [at, token_id],
            ):
                tx.changed(TOKENS)
            return ApiToken(**_token_row(tx, token_id))

    def touch(self, token_id: str, at: float) -> None:
        with self.db.transaction() as tx:
            if not tx.execute(
                "UPDATE api_tokens SET last_used_at = ? WHERE id = ?", [at, token_id]
            ):
                raise NotFound(f"API token {token_id!r} does not exist")


class SqlCompileJobRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add(
        self, model: str, version: str, profiles: Sequence[str], requested_by: str, at: float
    ) -> CompileJob:
        if not profiles:
            raise InvalidInput("a compile job needs at least one hardware profile")
        job_id = uuid.uuid4().hex
        with self.db.transaction() as tx:
            if (
                tx.row(
                    "SELECT 1 AS one FROM model_versions WHERE model = ? AND version = ?",
                    [model, version],
                )
                is None
            ):
                raise NotFound(f"model {model!r} has no version {version!r}")
            tx.execute(
                "INSERT INTO compile_jobs (id, model, version, profiles_json, state, progress,"
                " log, requested_by, created_at) VALUES (?, ?, ?, ?, 'queued', 0, '', ?, ?)",
                [job_id, model, version, dumps(list(profiles)), requested_by, at],
            )
            tx.changed(JOBS)
            return _job(_job_row(tx, job_id))

    def get(self, job_id: str) -> CompileJob:
        with self.db.transaction() as tx:
            return _job(_job_row(tx, job_id))

    def list(
        self,
        *,
        state: str | None = None,
        model: str | None = None,
        limit: int = DEFAULT_LIMIT,
        offset: int = 0,
    ) -> Page[CompileJob]:
        if state is not None and state not in JOB_STATES:
            raise InvalidInput(f"job state {state!r}: expected one of {list(JOB_STATES)}")
        with self.db.transaction() as tx:
            rows, more = page(
                tx,
                "SELECT * FROM compile_jobs",
                {"state": state, "model": model},
                "created_at, id",
                limit,
                offset,
            )
            return Page([_job(r) for r in rows], more)

    def claim(self, worker: str, at: float) -> CompileJob | None:
        with self.db.transaction() as tx:
            # a concurrent claimer of the same row re-checks state = 'queued' after the
            # first commits (PostgreSQL) or waits for the write lock (SQLite): one wins
            row = tx.row(
                "UPDATE compile_jobs SET state = 'running', worker = ?, started_at = ?"
                " WHERE id = (SELECT id FROM compile_jobs WHERE state = 'queued'"
                " ORDER BY created_at, id LIMIT 1) AND state = 'queued' RETURNING *",
                [worker, at],
            )
            if row is None:
                return None
            tx.changed(JOBS)
            return _job(_job_row(tx, row["id"]))

    def progress(self, job_id: str, progress: float, log: str = "") -> CompileJob:
        if not 0.0 <= progress <= 1.0:
            raise InvalidInput(f"progress {progress}: expected 0..1")
        with self.db.transaction() as tx:
            _running(tx, job_id)
            tx.execute(
                "UPDATE compile_jobs SET progress = ?, log = log || ? WHERE id = ?",
                [progress, log, job_id],
            )
            tx.changed(JOBS)
            return _job(_job_row(tx, job_id))

    def finish(
        self,
        job_id: str,
        state: str,
        at: float,
        *,
        report: Mapping[str, Any] | None = None,
        error: str | None = None,
    ) -> CompileJob:
        if state not in JOB_FINAL_STATES:
            raise InvalidInput(
                f"final job state {state!r}: expected one of {sorted(JOB_FINAL_STATES)}"
            )
        with self.db.transaction() as tx:
            job = _job(_job_row(tx, job_id))
            if job.state in JOB_FINAL_STATES:
                raise Conflict(f"compile job {job_id} is already {job.state}")
            progress = 1.0 if state == "succeeded" else job.progress
            tx.execute(
                "UPDATE compile_jobs SET state = ?, finished_at = ?, report_json = ?, error = ?,"
                " progress = ? WHERE id = ?",
                [
                    state,
                    at,
                    None if report is None else dumps(dict(report)),
                    error,
                    progress,
                    job_id,
                ],
            )
            tx.changed(JOBS)
            return _job(_job_row(tx, job_id))


def _token_row(tx: Tx, token_id: str) -> Row:
    row = tx.row("SELECT * FROM api_tokens WHERE id = ?", [token_id])
    if row is None:
        raise NotFound(f"API token {token_id!r} does not exist")
    return row


def _job_row(tx: Tx, job_id: str) -> Row:
    row = tx.row("SELECT * FROM compile_jobs WHERE id = ?", [job_id])
    if row is None:
        raise NotFound(f"compile job {job_id!r} does not exist")
    return row


def _running(tx: Tx, job_id: str) -> None:
    job = _job(_job_row(tx, job_id))
    if job.state != "running":
        raise Conflict(f"compile job {job_id} is {job.state}, not running")


def _job(row: Row) -> CompileJob:
    return CompileJob(
        id=row["id"],
        model=row["model"],
        version=row["version"],
        profiles=loads(row["profiles_json"]),
        state=row["state"],
        progress=float(row["progress"]),
        log=row["log"],
        report=loads(row["report_json"]),
        error=row["error"],
        requested_by=row["requested_by"],
        worker=row["worker"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )
