"""Function aliases: read and set a traffic split; the rollout engine's ``AliasTraffic`` port.

An operator sets an alias (``PUT /api/v1/functions/aliases/{name}``): a model,
its split ``{version: percent}`` and, optionally, the device id the function's
containers report telemetry under (default: the function part of the name).
While a rollout moves the alias, only the rollout does (an operator's set is a
409 naming it: pause, abort or roll back the rollout first).

:class:`AliasTrafficPort` is how the engine's ``SetTraffic`` / ``PointAlias``
actions reach the store: each writes an absolute split, so applying an action
twice (a recovered outbox) leaves the same split. Both are audited, the port's
writes as actor ``rollouts``.

A split's view carries, per version, the packages a container may load
(profile → sha256), so a container resolves alias and packages in one call.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from control_plane.core.function_alias import (
    check_alias_name,
    function_of,
    normalize_routes,
    primary_version,
    traffic_split,
)
from control_plane.core.rollout_model import PointAlias, SetTraffic
from control_plane.errors import Conflict, InvalidInput
from control_plane.services import Clock
from control_plane.services.audit import AuditService
from control_plane.services.tokens import Principal
from control_plane.store.records import DEFAULT_LIMIT, MAX_LIMIT, FunctionAlias, Page
from control_plane.store.repos import Repositories

ENGINE = "rollouts"
ACTIVE_PHASES = ("running", "paused")


def subject(name: str) -> str:
    return f"function-alias:{name}"


class FunctionAliasService:
    def __init__(self, repos: Repositories, audit: AuditService, clock: Clock = time.time) -> None:
        self.repos = repos
        self.audit = audit
        self.clock = clock

    def get(self, name: str) -> FunctionAlias:
        return self.repos.function_aliases.get(check_alias_name(name))

    def list(
        self, *, model: str | None = None, limit: int = DEFAULT_LIMIT, offset: int = 0
    ) -> Page[FunctionAlias]:
        return self.repos.function_aliases.list(model=model, limit=limit, offset=offset)

    def set(
        self,
        name: str,
        model: str,
        routes: Mapping[str, int],
        actor: Principal,
        *,
        telemetry_device: str | None = None,
        expected_revision: int | None = None,
    ) -> FunctionAlias:
        """Create or move an alias; 400 bad split, 404 unknown version, 409 retired version,
        a rollout moving it, or a stale ``expected_revision``."""
        check_alias_name(name)
        clean = normalize_routes(routes)
        for version in clean:
            stage = self.repos.versions.get(model, version).stage
            if stage == "retired":
                raise Conflict(f"{model} {version} is retired: an alias cannot route to it")
        moving = active_rollout(self.repos, name)
        if moving is not None:
            raise Conflict(
                f"rollout {moving} is moving function alias {name!r}: "
                "pause, abort or roll it back before setting the alias by hand"
            )
        before = self.repos.function_aliases.find(name)
        device = telemetry_device or (before.telemetry_device if before else function_of(name))
        after = self.repos.function_aliases.put(
            name, model, clean, device, self.clock(), expected_revision=expected_revision
        )
        self.audit.record(
            actor.name,
            "function_alias.set",
            subject(name),
            before=asdict(before) if before else None,
            after=asdict(after),
        )
        return after

    def view(self, alias: FunctionAlias) -> dict[str, Any]:
        """The alias, its primary version and, per routed version, its packages by profile."""
        packages: dict[str, dict[str, str]] = {}
        for version in alias.routes:
            found = self.repos.packages.list(
                model_name=alias.model, model_version=version, limit=MAX_LIMIT
            )
            packages[version] = {p.profile_id: p.sha256 for p in found.items}
        return {
            **asdict(alias),
            "version": primary_version(alias.routes),
            "packages": packages,
            "rollout": active_rollout(self.repos, alias.name),
        }


def active_rollout(repos: Repositories, name: str) -> str | None:
    """The running or paused rollout whose target is this alias, if any."""
    for rollout_id in repos.rollouts.ids_in_phases(ACTIVE_PHASES):
        target = repos.rollouts.get(rollout_id).state["spec"]["target"]
        if target.get("kind") == "alias" and target.get("alias") == name:
            return rollout_id
    return None


class AliasTrafficPort:
    """The engine's ``AliasTraffic`` over the function-alias repository (absolute writes)."""

    def __init__(self, repos: Repositories, audit: AuditService, clock: Clock = time.time) -> None:
        self.repos = repos
        self.audit = audit
        self.clock = clock

    def set_traffic(self, action: SetTraffic) -> None:
        self._write(
            action.alias,
            action.model,
            traffic_split(action.version, action.percent, action.previous_version),
            {"version": action.version, "percent": action.percent},
        )

    def point(self, action: PointAlias) -> None:
        self._write(action.alias, action.model, {action.version: 100}, {"version": action.version})

    def _write(self, name: str, model: str, routes: dict[str, int], detail: dict[str, Any]) -> None:
        before = self.repos.function_aliases.get(name)
        if before.model != model:
            raise InvalidInput(f"function alias {name!r} serves {before.model}, not {model}")
        if before.routes == routes:
            return  # already there (an outbox applied again)
        after = self.repos.function_aliases.put(
            name, model, routes, before.telemetry_device, self.clock()
        )
        self.audit.record(
            ENGINE,
            "function_alias.traffic",
            subject(name),
            before={"routes": before.routes},
            after={"routes": after.routes},
            detail=detail,
        )
