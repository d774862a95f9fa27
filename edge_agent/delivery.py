"""Deliver the outbox through a transport in batches the control plane can always take."""

from __future__ import annotations

import logging
import time

from edge_agent.core.limits import BATCH_BYTES, MAX_BATCH_MESSAGES
from edge_agent.outbox import Outbox
from edge_agent.transport.base import PayloadTooLarge, Transport, TransportError

logger = logging.getLogger(__name__)


def deliver(
    outbox: Outbox,
    transport: Transport,
    batch: int = MAX_BATCH_MESSAGES,
    *,
    deadline: float | None = None,
) -> int:
    """Send pending messages until the outbox is empty or the transport fails; returns acks.

    With ``deadline`` (a :func:`time.monotonic` instant) no new batch starts after it.

    Batches are bounded in bytes (:data:`BATCH_BYTES`) as well as in count, and
    status reports go first. A batch the control plane refuses as too large is
    halved; a single message it refuses as too large is dropped and counted, so
    nothing behind it waits for ever.
    """
    sent = 0
    budget = BATCH_BYTES
    while deadline is None or time.monotonic() < deadline:
        messages = outbox.pending(batch, budget)
        if not messages:
            break
        try:
            acked = transport.send(messages)
        except PayloadTooLarge as exc:
            if len(messages) == 1:
                outbox.drop(messages[0].id, str(exc))
            else:
                budget = max(1, budget // 2)
                batch = max(1, len(messages) // 2)
            continue
        except TransportError as exc:
            logger.info("outbox: %d messages wait (%s)", len(messages), exc)
            break
        outbox.ack(acked)
        sent += len(acked)
        if len(acked) < len(messages):
            break
    return sent
