"""The transport port: how the agent talks to the control plane.

A transport delivers commands to the agent, fetches packages, and carries
outbox messages (telemetry windows, status reports) up; a message counts as
delivered only when the control plane acknowledged it. MQTT and gRPC
transports implement the same methods; :mod:`.memory` is the in-process fake.
"""

from __future__ import annotations

import json
import queue
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from edge_agent.errors import EdgeError
from edge_agent.outbox import OutboxMessage


class TransportError(EdgeError):
    """The control plane cannot be reached, or refused a message."""


class PayloadTooLarge(TransportError):
    """The control plane refused an upload for its size (it will refuse it again)."""


def body_json(payload: dict[str, Any]) -> str:
    """An outbox payload as it travels (compact JSON, as the outbox stores and sizes it)."""
    return json.dumps(payload, separators=(",", ":"), allow_nan=False)


@dataclass(frozen=True)
class Command:
    """An instruction from the control plane, e.g. ``install`` with a package ref."""

    id: str
    type: str
    body: dict[str, Any] = field(default_factory=dict)
    execution_version: int = 0
    """Increases per device; a version already executed is acked again, not re-run."""


def drain(commands: queue.Queue[Command], timeout: float) -> list[Command]:
    """Every queued command, waiting up to ``timeout`` for the first."""
    try:
        batch = [commands.get(timeout=timeout)]
    except queue.Empty:
        return []
    while True:
        try:
            batch.append(commands.get_nowait())
        except queue.Empty:
            return batch


class Transport(Protocol):
    def send(self, messages: Sequence[OutboxMessage]) -> list[int]:
        """Deliver messages; return the ids the control plane acknowledged."""
        ...

    def poll_commands(self, timeout: float) -> list[Command]:
        """Commands waiting for this device, blocking up to ``timeout`` seconds."""
        ...

    def ack(
        self, command: Command, ok: bool, error: str = "", detail: dict[str, Any] | None = None
    ) -> None:
        """Acknowledge a command with its result (the control plane records it)."""
        ...

    def fetch_package(self, ref: str) -> bytes:
        """The bytes of a package the control plane offered (by ref, e.g. its sha256)."""
        ...

    def close(self) -> None: ...
