"""Commands: validated and resolved when sent, delivered by the transports, acked once."""

from __future__ import annotations

import builtins
import time
from collections.abc import Mapping
from typing import Any

from control_plane.errors import InvalidInput
from control_plane.services import Clock
from control_plane.store.records import DEFAULT_LIMIT, Command, Page
from control_plane.store.repos import Repositories

COMMAND_KINDS = frozenset({"deploy", "rollback", "config", "capture", "rotate_key"})


class CommandService:
    def __init__(self, repos: Repositories, clock: Clock = time.time) -> None:
        self.repos = repos
        self.clock = clock

    def send(
        self,
        device_id: str,
        kind: str,
        body: Mapping[str, Any],
        actor: str,
        *,
        execution_key: str | None = None,
        rollout_id: str | None = None,
    ) -> Command:
        """Queue a command with the device's next execution version.

        A deploy names a catalog package by ``sha256``; its id and size are added
        to the body. The transports learn of it through the change notifier.
        With an ``execution_key`` (rollouts) the same key again returns the command
        queued the first time, and writes no second audit entry.
        """
        if kind not in COMMAND_KINDS:
            raise InvalidInput(f"command kind {kind!r}: expected one of {sorted(COMMAND_KINDS)}")
        body = dict(body)
        if kind == "deploy":
            package = self.repos.packages.get(str(body.get("sha256", "")))
            body.update(package_id=package.package_id, size_bytes=package.size_bytes)
        at = self.clock()
        command = self.repos.commands.add(
            device_id, kind, body, at, execution_key=execution_key, rollout_id=rollout_id
        )
        if execution_key is not None and command.created_at != at:
            return command  # queued before (a re-applied outbox)
        self.repos.audit.add(
            actor,
            f"command.{kind}",
            device_id,
            command.created_at,
            after={"command_id": command.id, "execution_version": command.execution_version},
            detail=body,
        )
        return command

    def get(self, command_id: str) -> Command:
        return self.repos.commands.get(command_id)

    def pending(self, device_id: str | None = None) -> builtins.list[Command]:
        """Pending commands of active devices (one device's, or all), in version order."""
        return self.repos.commands.pending(device_id)

    def ack(self, device_id: str, command_id: str, ok: bool, result: Mapping[str, Any]) -> Command:
        """Record a device's ack; a second ack of the same command changes nothing."""
        return self.repos.commands.ack(command_id, device_id, ok, result, self.clock())

    def list(
        self,
        *,
        device_id: str | None = None,
        status: str | None = None,
        kind: str | None = None,
        limit: int = DEFAULT_LIMIT,
        offset: int = 0,
    ) -> Page[Command]:
        return self.repos.commands.list(
            device_id=device_id, status=status, kind=kind, limit=limit, offset=offset
        )
