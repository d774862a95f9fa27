"""Deploy a catalog version (or an alias) to one device or a label selector.

Every matching active device gets a ``deploy`` command naming the package of
the version built for its profile (``core/deployment.py`` decides, and refuses
naming a missing profile). Commands go out through ``send``: by default
straight to ``repos.commands`` (with the package id and size, as the command
service adds them); once the services are merged, pass ``CommandService.send``
so that there is one path for commands.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from control_plane.core.deployment import Target, plan_deployment
from control_plane.errors import Conflict, InvalidInput, NotFound
from control_plane.services import Clock
from control_plane.services.audit import AuditService
from control_plane.services.tokens import Principal
from control_plane.store.records import MAX_LIMIT, Command, Device
from control_plane.store.repos import Repositories

Send = Callable[[str, str, Mapping[str, Any], str], Command]


@dataclass(frozen=True)
class Deployment:
    model: str
    version: str
    commands: list[tuple[Command, str]]  # (command, package sha256)


class DeploymentService:
    def __init__(
        self,
        repos: Repositories,
        audit: AuditService,
        send: Send | None = None,
        clock: Clock = time.time,
    ) -> None:
        self.repos = repos
        self.audit = audit
        self.clock = clock
        self.send: Send = send or self._send_over_repos

    def deploy(
        self,
        model: str,
        version: str,
        actor: Principal,
        *,
        device_id: str | None = None,
        selector: Mapping[str, str] | None = None,
    ) -> Deployment:
        if (device_id is None) == (selector is None):
            raise InvalidInput("name exactly one of device_id or selector")
        found = self._version(model, version)
        targets = [Target(d.id, d.profile_id) for d in self._devices(device_id, selector)]
        packages = {}
        for profile in {t.profile_id for t in targets if t.profile_id is not None}:
            package = self.repos.packages.find(model, found, profile)
            if package is not None:
                packages[profile] = package.sha256
        stage = self.repos.versions.get(model, found).stage
        plan = plan_deployment(model, found, stage, targets, packages)
        sent = [
            (self.send(device, "deploy", {"sha256": sha}, actor.name), sha)
            for device, sha in sorted(plan.items())
        ]
        self.audit.record(
            actor.name,
            "deployment.create",
            f"model:{model}/version:{found}",
            after={c.device_id: {"command": c.id, "sha256": sha} for c, sha in sent},
            detail={"device_id": device_id} if device_id else {"selector": dict(selector or {})},
        )
        return Deployment(model, found, sent)

    def _version(self, model: str, version_or_alias: str) -> str:
        try:
            return self.repos.versions.get(model, version_or_alias).version
        except NotFound:
            try:
                return self.repos.aliases.get(model, version_or_alias).version
            except NotFound:
                raise NotFound(
                    f"model {model!r} has no version or alias {version_or_alias!r}"
                ) from None

    def _devices(self, device_id: str | None, selector: Mapping[str, str] | None) -> list[Device]:
        if device_id is not None:
            device = self.repos.devices.get(device_id)
            if device.status != "active":
                raise Conflict(f"device {device_id!r} is {device.status}")
            return [device]
        devices: list[Device] = []
        offset: int | None = 0
        while offset is not None:
            page = self.repos.devices.list(
                status="active", labels=selector, limit=MAX_LIMIT, offset=offset
            )
            devices += page.items
            offset = page.next_offset
        return devices

    def _send_over_repos(
        self, device_id: str, kind: str, body: Mapping[str, Any], actor: str
    ) -> Command:
        package = self.repos.packages.get(str(body["sha256"]))
        full = {**body, "package_id": package.package_id, "size_bytes": package.size_bytes}
        return self.repos.commands.add(device_id, kind, full, self.clock())
