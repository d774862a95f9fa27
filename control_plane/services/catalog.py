"""The model catalog: models, immutable versions with a card, moving aliases, lifecycle.

Each change is checked (names, the lifecycle in ``core/lifecycle.py``), written
through the repositories and recorded in the audit log with before/after.
What a version is compiled from (source format, calibration/validation/…
uploads) is kept beside its blobs in ``<data>/versions/<model>/<version>.json``,
written once with the version (the version row has no column for it yet).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from control_plane.core.lifecycle import check_transition
from control_plane.errors import Conflict, InvalidInput, NotFound
from control_plane.services import Clock
from control_plane.services.audit import AuditService
from control_plane.services.blobs import BlobStore
from control_plane.services.tokens import Principal
from control_plane.store.records import (
    DEFAULT_LIMIT,
    Alias,
    Model,
    ModelCard,
    ModelVersion,
    Package,
    Page,
)
from control_plane.store.repos import Repositories

logger = logging.getLogger(__name__)

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
ALIAS = re.compile(r"[a-z][a-z0-9_-]{0,31}")
SOURCE_FORMATS = ("onnx", "pt2")
DATA_ROLES = ("calibration", "validation", "reference", "labels")
REQUIRED_DATA = ("calibration", "validation")


def check_name(kind: str, value: str, pattern: re.Pattern[str] = NAME) -> str:
    if not pattern.fullmatch(value):
        raise InvalidInput(f"{kind} {value!r}: expected {pattern.pattern}")
    return value


@dataclass(frozen=True)
class VersionInputs:
    """What a version compiles from: the source's format and the data uploads by role."""

    source_format: str | None = None
    data: Mapping[str, str] = field(default_factory=dict)  # role -> sha256


class RollBack(Protocol):
    """Takes the devices running a version back to what they ran before (retirement)."""

    def __call__(
        self, model: str, version: str, running: Mapping[str, str], actor: Principal
    ) -> Any: ...


def version_view(version: ModelVersion) -> dict[str, Any]:
    view = asdict(version)
    view["card"]["metrics"] = dict(version.card.metrics)
    return view


class CatalogService:
    def __init__(
        self,
        repos: Repositories,
        audit: AuditService,
        blobs: BlobStore,
        catalog_dir: Path,
        clock: Clock = time.time,
    ) -> None:
        self.repos = repos
        self.audit = audit
        self.blobs = blobs
        self.catalog_dir = catalog_dir
        self.clock = clock
        # set by the API factory: rolls back devices of a version retired with force
        self.roll_back: RollBack | None = None

    # -- models

    def create_model(self, name: str, description: str, owner: str, actor: Principal) -> Model:
        check_name("model", name)
        model = self.repos.models.add(name, description, owner, self.clock())
        self.audit.record(actor.name, "model.create", f"model:{name}", after=asdict(model))
        return model

    def get_model(self, name: str) -> Model:
        return self.repos.models.get(name)

    def list_models(
        self, *, owner: str | None = None, limit: int = DEFAULT_LIMIT, offset: int = 0
    ) -> Page[Model]:
        return self.repos.models.list(owner=owner, limit=limit, offset=offset)

    # -- versions

    def register_version(
        self,
        model: str,
        version: str,
        card: ModelCard,
        actor: Principal,
        *,
        source_sha256: str | None = None,
        inputs: VersionInputs | None = None,
    ) -> ModelVersion:
        """An immutable version (stage ``registered``); its uploads must exist."""
        check_name("version", version)
        self.repos.models.get(model)
        inputs = inputs or VersionInputs()
        if inputs.source_format is not None and inputs.source_format not in SOURCE_FORMATS:
            raise InvalidInput(
                f"source_format {inputs.source_format!r}: expected one of {list(SOURCE_FORMATS)}"
            )
        for role, sha in {"source": source_sha256, **inputs.data}.items():
            if role != "source" and role not in DATA_ROLES:
                raise InvalidInput(f"data role {role!r}: expected one of {list(DATA_ROLES)}")
            if sha is not None:
                self.blobs.path(sha)  # NotFound naming the hash if it was never uploaded
        created = self.repos.versions.add(model, version, card, source_sha256, self.clock())
        self._write_inputs(model, version, inputs)
        self.audit.record(
            actor.name,
            "version.register",
            f"model:{model}/version:{version}",
            after={**version_view(created), "inputs": asdict(inputs)},
        )
        return created

    def get_version(self, model: str, version: str) -> ModelVersion:
        return self.repos.versions.get(model, version)

    def list_versions(
        self, model: str, *, stage: str | None = None, limit: int = DEFAULT_LIMIT, offset: int = 0
    ) -> Page[ModelVersion]:
        self.repos.models.get(model)
        return self.repos.versions.list(model, stage=stage, limit=limit, offset=offset)

    def version_inputs(self, model: str, version: str) -> VersionInputs:
        path = self._inputs_path(model, version)
        if not path.is_file():
            return VersionInputs()
        raw = json.loads(path.read_text())
        return VersionInputs(raw.get("source_format"), dict(raw.get("data", {})))

    def move_stage(
        self,
        model: str,
        version: str,
        target: str,
        actor: Principal,
        *,
        reason: str = "",
        force: bool = False,
    ) -> ModelVersion:
        """Move a version along the lifecycle; LifecycleError (409) naming an illegal move.

        Retiring a version devices still run is refused (VersionInUse, naming them)
        unless ``force``: then ``roll_back`` takes them back (services/retirement.py).
        """
        before = self.repos.versions.get(model, version)
        check_transition(before.stage, target)
        rolled_back = (
            self._before_retire(model, version, actor, force) if target == "retired" else None
        )
        if (
            target == "compiled"
            and before.stage == "registered"
            and not self._has_packages(model, version)
        ):
            raise Conflict(f"{model} {version} has no package yet: compile it first")
        after = self.repos.versions.set_stage(model, version, before.stage, target, self.clock())
        self.audit.record(
            actor.name,
            "version.stage",
            f"model:{model}/version:{version}",
            before={"stage": before.stage},
            after={"stage": after.stage},
            detail={
                **({"reason": reason} if reason else {}),
                **({"rolled_back": rolled_back} if rolled_back else {}),
            }
            or None,
        )
        return after

    def _before_retire(
        self, model: str, version: str, actor: Principal, force: bool
    ) -> dict[str, Any] | None:
        from control_plane.services.retirement import VersionInUse, devices_running_version

        running = devices_running_version(self.repos, model, version)
        if not running:
            return None
        listed = ", ".join(sorted(running))
        if not force:
            raise VersionInUse(
                f"{model} {version} is still installed on {len(running)} device(s): {listed}; "
                "deploy another version to them, or retire with force to roll them back",
                running,
            )
        if self.roll_back is None:
            raise Conflict(f"{model} {version} runs on {listed} and no rollback path is wired")
        done = self.roll_back(model, version, running, actor)
        return {"devices": dict(running), **done.view()}

    # -- aliases

    def set_alias(self, model: str, alias: str, version: str, actor: Principal) -> Alias:
        check_name("alias", alias, ALIAS)
        target = self.repos.versions.get(model, version)
        if target.stage == "retired":
            raise Conflict(f"{model} {version} is retired: an alias cannot point at it")
        try:
            before: Alias | None = self.repos.aliases.get(model, alias)
        except NotFound:
            before = None
        after = self.repos.aliases.set(model, alias, version, self.clock())
        self.audit.record(
            actor.name,
            "alias.set",
            f"model:{model}/alias:{alias}",
            before=asdict(before) if before else None,
            after=asdict(after),
        )
        return after

    def delete_alias(self, model: str, alias: str, actor: Principal) -> None:
        before = self.repos.aliases.get(model, alias)
        self.repos.aliases.delete(model, alias)
        self.audit.record(
            actor.name, "alias.delete", f"model:{model}/alias:{alias}", before=asdict(before)
        )

    def get_alias(self, model: str, alias: str) -> Alias:
        return self.repos.aliases.get(model, alias)

    def list_aliases(self, model: str) -> list[Alias]:
        self.repos.models.get(model)
        return self.repos.aliases.list(model)

    # -- packages (reading them: PackageService, the one implementation)

    def register_package(self, package: Package, actor: str) -> Package:
        stored = self.repos.packages.put(package)
        self.audit.record(
            actor,
            "package.register",
            f"package:{stored.sha256}",
            after={
                "package_id": stored.package_id,
                "model": stored.model_name,
                "version": stored.model_version,
                "profile": stored.profile_id,
                "release": stored.release,
            },
        )
        return stored

    def next_release(self, model: str, version: str) -> int:
        page = self.repos.packages.list(model_name=model, model_version=version, limit=1000)
        return max((p.release for p in page.items), default=0) + 1

    # -- internals

    def _has_packages(self, model: str, version: str) -> bool:
        page = self.repos.packages.list(model_name=model, model_version=version, limit=1)
        return bool(page.items)

    def _inputs_path(self, model: str, version: str) -> Path:
        return (
            self.catalog_dir / check_name("model", model) / f"{check_name('version', version)}.json"
        )

    def _write_inputs(self, model: str, version: str, inputs: VersionInputs) -> None:
        path = self._inputs_path(model, version)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(inputs) | {"data": dict(inputs.data)}, sort_keys=True))
        os.replace(tmp, path)
