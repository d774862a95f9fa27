"""The telemetry pipeline: close a window -> sequence number -> outbox -> send until acked.

One :class:`Reporter` per identity (a device, a function container, a batch
job) and outbox. It is what the agent daemon's ticker, a serverless handler and
the batch scorer share:

    reporter = Reporter(outbox, transport, device_id="dev-1")
    reporter.record(model.telemetry)          # close the window if it has traffic
    reporter.flush(deadline=time.monotonic() + 2)   # deliver until acked or time is up

Nothing here imports the daemon (agent, install, slots, watchlist, commands,
local API): the on-device library is runtime, package, core and this module.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from edge_agent.core.limits import MAX_BATCH_MESSAGES, fit_window
from edge_agent.core.telemetry import ModelTelemetry
from edge_agent.delivery import deliver
from edge_agent.outbox import Outbox
from edge_agent.transport.base import Transport

logger = logging.getLogger(__name__)


class Reporter:
    """Turns telemetry windows and status reports into durable, sequenced outbox messages.

    ``sequence`` hands out the (device id, sequence) numbers that make ingest
    exactly-once; by default the outbox's durable counter (1, 2, ...). A
    function container shares its device id with other containers and passes
    a counter under its own instance prefix (see :mod:`functions.telemetry`).
    """

    def __init__(
        self,
        outbox: Outbox,
        transport: Transport | None,
        device_id: str,
        *,
        sequence: Callable[[], int] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.outbox = outbox
        self.transport = transport
        self.device_id = device_id
        self.next_sequence = sequence or outbox.next_sequence
        self.clock = clock

    def record(self, telemetry: ModelTelemetry | None) -> dict[str, Any] | None:
        """Close ``telemetry``'s window into the outbox if it saw traffic; returns what was put.

        A window over the message limit is trimmed (captures first, see
        :func:`~edge_agent.core.limits.fit_window`) and the trim logged.
        """
        if telemetry is None or not telemetry.pending_requests():
            return None
        window = telemetry.close_window(self.device_id, self.next_sequence())
        fitted = fit_window(window, self.outbox.max_message_bytes)
        if fitted is not window:
            logger.warning(
                "%s: window %d over %d bytes; trimmed %s",
                telemetry.manifest.model_name,
                window["sequence"],
                self.outbox.max_message_bytes,
                ", ".join(fitted["trimmed"]) or "nothing",
            )
        self.outbox.put("telemetry_window", fitted)
        return fitted

    def record_window(self, window: dict[str, Any]) -> None:
        """Put an already closed window (its ``sequence`` assigned by this reporter)."""
        self.outbox.put("telemetry_window", fit_window(window, self.outbox.max_message_bytes))

    def status(self, fields: dict[str, Any], dedupe_key: str) -> None:
        """A status report (install, rollback, health...), stored once per ``dedupe_key``."""
        payload = {
            "kind": "status",
            "device_id": self.device_id,
            "sequence": self.next_sequence(),
            "at": self.clock(),
            **fields,
        }
        self.outbox.put("status", payload, dedupe_key)

    def flush(self, deadline: float | None = None, batch: int = MAX_BATCH_MESSAGES) -> int:
        """Deliver waiting messages until acked, the transport fails, or ``deadline`` passes.

        ``deadline`` is a :func:`time.monotonic` instant; returns the messages acked.
        Without a transport nothing is sent and everything waits in the outbox.
        """
        if self.transport is None:
            return 0
        return deliver(self.outbox, self.transport, batch, deadline=deadline)

    def pending(self) -> int:
        return self.outbox.stats()["messages"]
