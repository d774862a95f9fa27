"""Per-device ingest quotas: token buckets on bytes and on items, with an injected clock.

Both transports call :meth:`IngestQuota.take` through ``Fleet.ingest`` before
anything is stored. Over quota, the whole upload is refused (not acked, not
rejected): the device keeps it in its outbox and sends it again later, and
the refusal is counted per device for operators (``fleetcast devices list``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from edge_agent.core import limits

# one constant for both transports and both sides (edge_agent/core/limits.py):
# a gRPC message and an MQTT packet are capped alike
MAX_MESSAGE_BYTES = limits.MAX_UPLOAD_BYTES
# one upload item's body; the agent's largest outbox message always fits
MAX_UPLOAD_BYTES = 4 * 1024 * 1024
assert limits.MAX_MESSAGE_BYTES <= MAX_UPLOAD_BYTES


@dataclass(frozen=True)
class QuotaLimits:
    bytes_per_second: float = 256 * 1024
    burst_bytes: float = 32 * 1024 * 1024
    items_per_second: float = 20.0
    burst_items: float = 2000.0


@dataclass
class _Bucket:
    bytes: float
    items: float
    at: float


class IngestQuota:
    """Token buckets per device; thread-safe."""

    def __init__(self, limits: QuotaLimits, clock: Callable[[], float]) -> None:
        self.limits = limits
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, device_id: str, size: int, items: int) -> str | None:
        """Spend ``size`` bytes and ``items`` items of the device's quota; why not, if over."""
        lim = self.limits
        now = self.clock()
        with self._lock:
            bucket = self._buckets.get(device_id)
            if bucket is None:
                bucket = self._buckets[device_id] = _Bucket(lim.burst_bytes, lim.burst_items, now)
            elapsed = max(0.0, now - bucket.at)
            bucket.bytes = min(lim.burst_bytes, bucket.bytes + elapsed * lim.bytes_per_second)
            bucket.items = min(lim.burst_items, bucket.items + elapsed * lim.items_per_second)
            bucket.at = now
            # an upload larger than the burst passes on a full bucket and leaves a debt,
            # so a device is slowed down but never stuck behind one big message
            if min(size, lim.burst_bytes) > bucket.bytes:
                return (
                    f"device {device_id!r} is over its upload quota "
                    f"({size} bytes asked, {int(bucket.bytes)} left; "
                    f"{int(lim.bytes_per_second)} bytes/s): retry later"
                )
            if min(items, lim.burst_items) > bucket.items:
                return (
                    f"device {device_id!r} is over its upload rate "
                    f"({items} items asked, {int(bucket.items)} left; "
                    f"{lim.items_per_second:g} items/s): retry later"
                )
            bucket.bytes -= size
            bucket.items -= items
            return None
