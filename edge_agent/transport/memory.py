"""An in-process transport for tests and the local ``install`` command."""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from typing import Any

from edge_agent.outbox import OutboxMessage
from edge_agent.transport.base import Command, TransportError


class InMemoryTransport:
    """Commands are queued by the test; sent messages are kept in ``delivered``.

    ``online = False`` makes every call fail, as an unreachable control plane would.
    """

    def __init__(self) -> None:
        self.online = True
        self.delivered: list[dict[str, Any]] = []
        self.packages: dict[str, bytes] = {}
        self.acks: list[tuple[str, bool, str, dict[str, Any]]] = []
        self._commands: queue.Queue[Command] = queue.Queue()
        self._lock = threading.Lock()

    def push_command(self, command: Command) -> None:
        self._commands.put(command)

    def offer_package(self, ref: str, data: bytes) -> None:
        self.packages[ref] = data

    def send(self, messages: Sequence[OutboxMessage]) -> list[int]:
        if not self.online:
            raise TransportError("in-memory transport is offline")
        with self._lock:
            self.delivered.extend(m.payload for m in messages)
        return [m.id for m in messages]

    def ack(
        self, command: Command, ok: bool, error: str = "", detail: dict[str, Any] | None = None
    ) -> None:
        with self._lock:
            self.acks.append((command.id, ok, error, detail or {}))

    def poll_commands(self, timeout: float) -> list[Command]:
        if not self.online:
            return []
        try:
            first = self._commands.get(timeout=timeout)
        except queue.Empty:
            return []
        commands = [first]
        while True:
            try:
                commands.append(self._commands.get_nowait())
            except queue.Empty:
                return commands

    def fetch_package(self, ref: str) -> bytes:
        if not self.online:
            raise TransportError("in-memory transport is offline")
        try:
            return self.packages[ref]
        except KeyError as exc:
            raise TransportError(f"no package {ref!r} on offer") from exc

    def close(self) -> None:
        self.online = False

    def delivered_of(self, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            return [m for m in self.delivered if m.get("kind") == kind]
