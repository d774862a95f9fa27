"""Telemetry from a function container: windows aggregate in memory, flush on a bound.

Each invocation is counted in the model's open window (no I/O). After the
invocation, and before the handler returns, the window is closed into a small
SQLite outbox in ``/tmp`` and sent to the control plane only when it is due:
``FLEETCAST_WINDOW_SECONDS`` (default 60) since it opened, or
``FLEETCAST_WINDOW_MAX_REQUESTS`` (default 1000) requests in it. In the common
case an invocation adds no I/O at all. A container started on a ``/tmp`` that
still holds an outbox (a recycled process) drains it at init; on a fresh
``/tmp`` the outbox is created when the first window closes, so a cold start
pays no SQLite file creation (and imports no outbox code).

With ``FLEETCAST_TELEMETRY_DURABILITY=invocation`` every invocation's window
is closed into the outbox before the handler returns (a local SQLite write;
still sent only on the bounds), so a container killed while frozen loses
nothing. See docs/functions.md for the guarantee.

Containers of one function share its device credential; each takes a random
instance number kept beside its outbox, and its sequence numbers are
``instance << 23 | counter``, so (device id, sequence) stays unique.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from edge_agent.outbox import Outbox, OutboxMessage
    from edge_agent.reporting import Reporter
    from edge_agent.runtime import Model
    from edge_agent.transport.base import Command, Transport

logger = logging.getLogger(__name__)

COUNTER_BITS = 23
Durability = Literal["window", "invocation"]


@dataclass(frozen=True)
class TelemetrySettings:
    outbox_dir: Path = Path("/tmp/fleetcast")
    device_id: str = "function"
    server: str | None = None
    device_token: str = ""
    window_seconds: float = 60.0
    max_requests: int = 1000
    durability: Durability = "window"
    flush_timeout: float = 2.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TelemetrySettings | None:
        if env.get("FLEETCAST_TELEMETRY", "on") == "off":
            return None
        durability = env.get("FLEETCAST_TELEMETRY_DURABILITY", "window")
        if durability not in ("window", "invocation"):
            raise ValueError(
                f"FLEETCAST_TELEMETRY_DURABILITY={durability!r}: expected window or invocation"
            )
        name = env.get("AWS_LAMBDA_FUNCTION_NAME") or env.get("K_SERVICE") or "function"
        return cls(
            outbox_dir=Path(env.get("FLEETCAST_OUTBOX_DIR", "/tmp/fleetcast")),
            device_id=env.get("FLEETCAST_DEVICE_ID", name),
            server=env.get("FLEETCAST_SERVER") or None,
            device_token=env.get("FLEETCAST_DEVICE_TOKEN", ""),
            window_seconds=float(env.get("FLEETCAST_WINDOW_SECONDS", "60")),
            max_requests=int(env.get("FLEETCAST_WINDOW_MAX_REQUESTS", "1000")),
            durability="invocation" if durability == "invocation" else "window",
            flush_timeout=float(env.get("FLEETCAST_FLUSH_TIMEOUT", "2")),
        )


class GrpcUploader:
    """Upload-only gRPC transport: a function takes no commands and downloads nothing.

    grpc is imported on the first send, so a cold start without a due window
    never pays for it.
    """

    def __init__(self, server: str, device_token: str) -> None:
        from edge_agent.transport.base import TransportError
        from edge_agent.transport.factory import check_plaintext, parse_server

        scheme, host, port = parse_server(server)
        if scheme != "grpc":
            raise TransportError(f"functions upload over gRPC only, not {scheme}://")
        check_plaintext(host, None, insecure=False)
        self.target = f"{host}:{port}"
        self._metadata = (("authorization", f"Bearer {device_token}"),)
        self._stub: Any = None
        self._channel: Any = None

    def send(self, messages: Sequence[OutboxMessage]) -> list[int]:
        from edge_agent.proto.fleetcast.v1 import agent_pb2_grpc
        from edge_agent.transport.grpc import make_channel, upload

        if self._stub is None:
            self._channel = make_channel(self.target, None)
            self._stub = agent_pb2_grpc.AgentServiceStub(self._channel)  # type: ignore[no-untyped-call]
        return upload(self._stub, self._metadata, messages, timeout=5)

    def poll_commands(self, timeout: float) -> list[Command]:
        return []

    def ack(
        self, command: Command, ok: bool, error: str = "", detail: dict[str, Any] | None = None
    ) -> None:
        from edge_agent.transport.base import TransportError

        raise TransportError("functions take no commands")

    def fetch_package(self, ref: str) -> bytes:
        from edge_agent.transport.base import TransportError

        raise TransportError("functions download no packages: the package ships with them")

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()


def _instance(directory: Path) -> int:
    """This /tmp's instance number (random, 40 bits), kept so a recycled process continues."""
    path = directory / "instance.json"
    try:
        return int(json.loads(path.read_text())["instance"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    import secrets

    number = secrets.randbits(40) or 1
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"instance": number}))
    os.replace(tmp, path)
    return number


def instance_sequence(outbox: Outbox, directory: Path) -> Callable[[], int]:
    """Sequence numbers unique among every process sharing one device credential:
    this directory's instance number over the outbox's durable counter."""
    base = _instance(directory) << COUNTER_BITS
    return lambda: base + outbox.next_sequence()


OUTBOX_NAME = "outbox.sqlite"
OUTBOX_QUOTA = 16 * 1024 * 1024


class FunctionTelemetry:
    """The container's reporter: close windows on their bounds, flush before returning.

    The outbox is opened at init only when ``outbox_dir`` already holds one (a
    recycled container: what it left is sent now); otherwise when the first
    window closes. Until then nothing is on disk, as nothing is to be kept.
    """

    def __init__(
        self,
        model: Model,
        settings: TelemetrySettings,
        transport: Transport | None = None,
        *,
        others: Sequence[Model] = (),
        alias: str | None = None,
    ) -> None:
        self.model = model
        self.models = [model, *others]  # a traffic split: one window per version
        self.alias = alias  # stamped on every window: the alias rollout's gates read it
        self.settings = settings
        if transport is None and settings.server:
            transport = GrpcUploader(settings.server, settings.device_token)
        self.transport = transport
        self._reporter: Reporter | None = None
        self._lock = threading.Lock()
        self._opened = time.monotonic()
        self._invocations = 0  # since the last send
        if (settings.outbox_dir / OUTBOX_NAME).exists() and self.reporter.pending():
            sent = self.flush()  # a recycled container: deliver what the last one left
            logger.info("fleetcast: drained %d windows a previous process left", sent)

    @property
    def outbox_open(self) -> bool:
        return self._reporter is not None

    @property
    def reporter(self) -> Reporter:
        """The outbox's reporter, the outbox created on first use."""
        if self._reporter is None:
            from edge_agent.outbox import Outbox
            from edge_agent.reporting import Reporter

            directory = self.settings.outbox_dir
            directory.mkdir(parents=True, exist_ok=True)
            outbox = Outbox(directory / OUTBOX_NAME, quota_bytes=OUTBOX_QUOTA)
            self._reporter = Reporter(
                outbox,
                self.transport,
                self.settings.device_id,
                sequence=instance_sequence(outbox, directory),
            )
        return self._reporter

    def due(self) -> bool:
        """A bound is reached: requests since the last send, or time since it."""
        return (
            self._invocations >= self.settings.max_requests
            or time.monotonic() - self._opened >= self.settings.window_seconds
        )

    def after_invocation(self) -> None:
        """Called before the handler returns; does I/O only when a window is due."""
        self._invocations += 1  # under the GIL; an increment lost to a race only delays a send
        durable = self.settings.durability == "invocation"
        if not durable and not self.due():
            return
        if not self._lock.acquire(blocking=False):
            return  # another thread is closing the window right now
        try:
            due = self.due()
            if due or durable:
                for model in self.models:
                    self._record(model)
            if due:
                self._opened = time.monotonic()
                self._invocations = 0
                self.flush()
        except Exception:  # telemetry never fails an invocation
            logger.exception("fleetcast: telemetry flush")
        finally:
            self._lock.release()

    def _record(self, model: Model) -> None:
        """Close the model's window into the outbox, with the alias when there is one."""
        telemetry = model.telemetry
        if self.alias is None or telemetry is None:
            self.reporter.record(telemetry)
            return
        if not telemetry.pending_requests():
            return
        window = telemetry.close_window(self.reporter.device_id, self.reporter.next_sequence())
        self.reporter.record_window({**window, "alias": self.alias})

    def flush(self) -> int:
        deadline = time.monotonic() + self.settings.flush_timeout
        return self.reporter.flush(deadline=deadline)

    def close(self) -> None:
        """Close the open window into the outbox and try to send (a graceful shutdown)."""
        with self._lock:
            pending = any(m.telemetry and m.telemetry.pending_requests() for m in self.models)
            if self._reporter is not None or pending:
                for model in self.models:
                    self._record(model)
                self.flush()
                self.reporter.outbox.close()
            if self.transport is not None:
                self.transport.close()
