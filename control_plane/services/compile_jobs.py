"""Compile jobs: queued through the API, run by a background worker, packages to the catalog.

Any number of workers (one per control-plane replica) may run; each takes the
oldest queued job with ``CompileJobRepo.claim``, which hands a job to exactly
one of them. A worker runs the compile pipeline (``pipeline_runner``) and
records progress and log lines as it goes, then registers one package per
profile in the catalog, moves a ``registered`` version to ``compiled`` and
finishes the job with the pipeline's report (or the error that stopped it).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from control_plane.errors import Conflict, ControlPlaneError, InvalidInput
from control_plane.services import Clock
from control_plane.services.audit import AuditService
from control_plane.services.catalog import REQUIRED_DATA, CatalogService
from control_plane.services.tokens import Principal
from control_plane.store.records import DEFAULT_LIMIT, CompileJob, Package, Page
from control_plane.store.repos import Repositories

logger = logging.getLogger(__name__)

ProgressFn = Callable[[float, str], None]


@dataclass(frozen=True)
class CompileTask:
    """What a runner needs: the job, its release number and the uploaded files by role."""

    job: CompileJob
    release: int
    source: Path
    source_format: str
    data: dict[str, Path]


@dataclass(frozen=True)
class BuiltPackage:
    profile_id: str
    path: Path
    sha256: str
    size_bytes: int
    package_id: str
    release: int
    manifest: dict[str, Any]
    summary: dict[str, Any]


Runner = Callable[[CompileTask, ProgressFn], list[BuiltPackage]]


class CompileJobService:
    def __init__(
        self,
        repos: Repositories,
        catalog: CatalogService,
        audit: AuditService,
        known_profiles: Callable[[], Sequence[str]],
        clock: Clock = time.time,
    ) -> None:
        self.repos = repos
        self.catalog = catalog
        self.audit = audit
        self.known_profiles = known_profiles
        self.clock = clock

    def submit(
        self, model: str, version: str, profiles: Sequence[str], actor: Principal
    ) -> CompileJob:
        """Queue a job; the version needs a source and its calibration/validation uploads."""
        found = self.catalog.get_version(model, version)
        if found.stage == "retired":
            raise InvalidInput(f"{model} {version} is retired: it cannot be compiled")
        inputs = self.catalog.version_inputs(model, version)
        missing = [r for r in REQUIRED_DATA if r not in inputs.data]
        if found.source_sha256 is None or inputs.source_format is None:
            missing.insert(0, "source (source_sha256 and source_format)")
        if missing:
            raise InvalidInput(
                f"{model} {version} cannot be compiled: register it with {', '.join(missing)}"
            )
        known = set(self.known_profiles())
        selected = list(dict.fromkeys(profiles)) or sorted(known)
        unknown = [p for p in selected if p not in known]
        if unknown:
            raise InvalidInput(f"unknown hardware profile(s) {unknown}: known {sorted(known)}")
        job = self.repos.compile_jobs.add(model, version, selected, actor.name, self.clock())
        self.audit.record(
            actor.name,
            "compile_job.create",
            f"compile_job:{job.id}",
            after={"model": model, "version": version, "profiles": selected},
        )
        return job

    def get(self, job_id: str) -> CompileJob:
        return self.repos.compile_jobs.get(job_id)

    def list(
        self,
        *,
        state: str | None = None,
        model: str | None = None,
        limit: int = DEFAULT_LIMIT,
        offset: int = 0,
    ) -> Page[CompileJob]:
        return self.repos.compile_jobs.list(state=state, model=model, limit=limit, offset=offset)

    def run_one(self, worker: str, runner: Runner) -> CompileJob | None:
        """Claim the oldest queued job and run it to the end; None when none was queued."""
        job = self.repos.compile_jobs.claim(worker, self.clock())
        if job is None:
            return None
        actor = f"worker:{worker}"
        logger.info("compile job %s: %s %s for %s", job.id, job.model, job.version, job.profiles)

        def progress(fraction: float, line: str) -> None:
            self.repos.compile_jobs.progress(job.id, min(max(fraction, 0.0), 0.99), line + "\n")

        try:
            task = self._task(job)
            built = runner(task, progress)
            if self.repos.compile_jobs.get(job.id).state != "running":
                raise Conflict(f"compile job {job.id} was cancelled while it ran")
            for item in built:
                self.catalog.register_package(self._package(job, item), actor)
            self._mark_compiled(job, actor)
            report = {"packages": [b.summary for b in built]}
            done = self.repos.compile_jobs.finish(job.id, "succeeded", self.clock(), report=report)
        except ControlPlaneError as exc:
            logger.warning("compile job %s failed: %s", job.id, exc)
            done = self._fail(job.id, str(exc))
        except Exception as exc:  # a tool chain failing in a way we did not name: keep the job
            logger.exception("compile job %s crashed", job.id)
            done = self._fail(job.id, f"{type(exc).__name__}: {exc}")
        self.audit.record(
            actor,
            "compile_job.finish",
            f"compile_job:{job.id}",
            before={"state": "running"},
            after={"state": done.state, "error": done.error},
        )
        return done

    def cancel(self, job_id: str, actor: Principal) -> CompileJob:
        """Cancel a queued or running job; a running one stops at its next progress line."""
        before = self.repos.compile_jobs.get(job_id)
        done = self.repos.compile_jobs.finish(
            job_id, "cancelled", self.clock(), error=f"cancelled by {actor.name}"
        )  # Conflict when it already ended
        self.audit.record(
            actor.name,
            "compile_job.cancel",
            f"compile_job:{job_id}",
            before={"state": before.state},
            after={"state": done.state},
        )
        return done

    def _fail(self, job_id: str, error: str) -> CompileJob:
        """Mark a job failed, unless it ended meanwhile (cancelled): then it stays as it is."""
        try:
            return self.repos.compile_jobs.finish(job_id, "failed", self.clock(), error=error)
        except Conflict:
            return self.repos.compile_jobs.get(job_id)

    def _mark_compiled(self, job: CompileJob, actor: str) -> None:
        """registered → compiled; another job of the same version may have done it meanwhile."""
        if self.catalog.get_version(job.model, job.version).stage != "registered":
            return
        try:
            self.catalog.move_stage(
                job.model, job.version, "compiled", Principal(actor, "operator")
            )
        except Conflict:
            if self.catalog.get_version(job.model, job.version).stage == "registered":
                raise

    def _task(self, job: CompileJob) -> CompileTask:
        version = self.catalog.get_version(job.model, job.version)
        inputs = self.catalog.version_inputs(job.model, job.version)
        if version.source_sha256 is None or inputs.source_format is None:
            raise InvalidInput(f"{job.model} {job.version} has no source model")
        return CompileTask(
            job=job,
            release=self.catalog.next_release(job.model, job.version),
            source=self.catalog.blobs.path(version.source_sha256),
            source_format=inputs.source_format,
            data={role: self.catalog.blobs.path(sha) for role, sha in inputs.data.items()},
        )

    def _package(self, job: CompileJob, item: BuiltPackage) -> Package:
        return Package(
            sha256=item.sha256,
            package_id=item.package_id,
            model_name=job.model,
            model_version=job.version,
            profile_id=item.profile_id,
            release=item.release,
            size_bytes=item.size_bytes,
            path=str(item.path),
            manifest=item.manifest,
            created_at=self.clock(),
        )


class CompileWorker:
    """A thread running queued jobs; wakes on the store's ``jobs`` topic (or every ``poll`` s)."""

    def __init__(
        self,
        jobs: CompileJobService,
        runner: Runner,
        name: str | None = None,
        poll: float = 2.0,
    ) -> None:
        self.jobs = jobs
        self.runner = runner
        self.name = name or f"{socket.gethostname()}:{threading.get_native_id()}"
        self.poll = poll
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="compile-worker", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        subscription = self.jobs.repos.notifier.subscribe()
        try:
            while not self._stop.is_set():
                try:
                    ran = self.jobs.run_one(self.name, self.runner)
                except ControlPlaneError as exc:  # the store busy or gone: try again later
                    logger.warning("compile worker: %s", exc)
                    ran = None
                if ran is None:  # in short slices, so that stop() is prompt
                    waited = 0.0
                    while waited < self.poll and not self._stop.is_set():
                        if subscription.wait(0.25):
                            break
                        waited += 0.25
        finally:
            subscription.close()
