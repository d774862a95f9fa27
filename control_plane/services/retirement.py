"""Retiring a version still installed on devices: refused naming them, or (force) rolled back.

:class:`CatalogService.move_stage` asks :func:`devices_running_version` before a
version becomes ``retired``; without ``force`` a version some device still runs
is refused (:class:`VersionInUse`, a 409 listing the devices). With ``force``,
:class:`RetirementRollback` takes those devices back to what they ran before:

- devices a rollout brought the version to: that rollout is rolled back by the
  rollout engine (``RolloutService.act(…, "rollback")``), which sends each of
  them a ``rollback`` to its ``previous_package``;
- the others (deployed directly): a ``rollback`` command each (the agent
  switches back to its other slot), one per device and version (execution key).

The version's rows, packages and audit history are kept; only its stage moves.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from control_plane.core.installed import devices_running
from control_plane.core.rollout_model import Rollout
from control_plane.errors import Conflict, ControlPlaneError
from control_plane.services.commands import CommandService
from control_plane.services.rollouts import RolloutService
from control_plane.services.tokens import Principal
from control_plane.store.records import MAX_LIMIT, Command
from control_plane.store.repos import Repositories

logger = logging.getLogger(__name__)


class VersionInUse(Conflict):
    """A version devices still run cannot be retired without ``force``; ``devices`` names them."""

    def __init__(self, message: str, devices: Mapping[str, str]) -> None:
        super().__init__(message)
        self.devices = dict(devices)


@dataclass
class RollbackDone:
    rollouts: list[str] = field(default_factory=list)  # rolled back by the engine
    commands: dict[str, str] = field(default_factory=dict)  # device -> rollback command id
    not_sent: dict[str, str] = field(default_factory=dict)  # device -> why

    def view(self) -> dict[str, Any]:
        return {"rollouts": self.rollouts, "commands": self.commands, "not_sent": self.not_sent}


def _all_commands(repos: Repositories) -> list[Command]:
    found: list[Command] = []
    for kind in ("deploy", "rollback"):
        offset: int | None = 0
        while offset is not None:
            page = repos.commands.list(kind=kind, limit=MAX_LIMIT, offset=offset)
            found += page.items
            offset = page.next_offset
    return found


def devices_running_version(repos: Repositories, model: str, version: str) -> dict[str, str]:
    """``device -> package id`` of the active devices whose active package is of the version."""
    ids: set[str] = set()
    offset: int | None = 0
    while offset is not None:
        page = repos.packages.list(
            model_name=model, model_version=version, limit=MAX_LIMIT, offset=offset
        )
        ids |= {p.package_id for p in page.items}
        offset = page.next_offset
    if not ids:
        return {}
    running = devices_running(_all_commands(repos), model, ids)
    return {d: p for d, p in sorted(running.items()) if _active(repos, d)}


def _active(repos: Repositories, device_id: str) -> bool:
    device = repos.devices.find(device_id)
    return device is not None and device.status == "active"


class RetirementRollback:
    """Rolls the devices running a version back (rollout engine first, then direct commands)."""

    def __init__(
        self, repos: Repositories, rollouts: RolloutService, commands: CommandService
    ) -> None:
        self.repos = repos
        self.rollouts = rollouts
        self.commands = commands

    def __call__(
        self, model: str, version: str, running: Mapping[str, str], actor: Principal
    ) -> RollbackDone:
        done = RollbackDone()
        left = dict(running)
        reason = f"{model} {version} retired"
        offset: int | None = 0
        while offset is not None and left:
            page = self.repos.rollouts.list(model=model, limit=MAX_LIMIT, offset=offset)
            for row in page.items:
                if row.version != version or row.phase == "rolled_back":
                    continue
                covered = set(Rollout.from_dict(row.state).devices) & set(left)
                if not covered:
                    continue
                try:
                    self.rollouts.act(row.id, "rollback", actor, reason=reason, scope="all")
                except ControlPlaneError as exc:
                    logger.warning("rollout %s not rolled back: %s", row.id, exc)
                    continue
                done.rollouts.append(row.id)
                for device in covered:
                    left.pop(device)
            offset = page.next_offset
        for device in sorted(left):
            try:
                command = self.commands.send(
                    device,
                    "rollback",
                    {"model_name": model, "reason": reason},
                    actor.name,
                    execution_key=f"retire:{model}:{version}:{device}",
                )
            except ControlPlaneError as exc:
                done.not_sent[device] = str(exc)
                continue
            done.commands[device] = command.id
        return done
