"""Call limits of the gRPC agent service, so that no device can starve the others.

The synchronous gRPC server holds one worker thread per open call. Without
limits, one device opening idle command streams takes every worker and other
devices' uploads, streams and enrollments fail. So:

- a device has at most one command stream: a new one replaces the old, which
  ends cleanly (status OK) at its next wake-up;
- a device has at most ``per_device`` calls in flight (RESOURCE_EXHAUSTED for
  that device only);
- long calls (command streams and downloads) of all devices together hold at
  most ``long_calls`` workers, so the rest always serve Enroll and uploads.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from control_plane.errors import ResourceExhausted

PER_DEVICE_CALLS = 4


@dataclass
class Slot:
    """One admitted call; :meth:`release` is idempotent (finally and gRPC callback both call it)."""

    limiter: CallLimiter
    device_id: str
    long: bool
    replaced: threading.Event = field(default_factory=threading.Event)
    replacing: bool = False  # this stream replaced an older one of the same device
    _released: bool = False

    def release(self) -> None:
        self.limiter._release(self)


class CallLimiter:
    def __init__(self, workers: int, per_device: int = PER_DEVICE_CALLS) -> None:
        reserve = max(2, workers // 4)
        self.long_calls = max(1, workers - reserve)
        self.per_device = per_device
        self._lock = threading.Lock()
        self._calls: dict[str, int] = {}
        self._long = 0
        self._streams: dict[str, Slot] = {}

    def admit(self, device_id: str, long: bool = False, stream: bool = False) -> Slot:
        """Admit a call of ``device_id`` or raise ResourceExhausted naming the limit."""
        with self._lock:
            if self._calls.get(device_id, 0) >= self.per_device:
                raise ResourceExhausted(
                    f"device {device_id!r} has {self.per_device} calls in flight already"
                )
            if long and self._long >= self.long_calls:
                raise ResourceExhausted(
                    f"the server is serving {self._long} streams and downloads: retry later"
                )
            self._calls[device_id] = self._calls.get(device_id, 0) + 1
            self._long += long
            slot = Slot(self, device_id, long)
            if stream:
                old = self._streams.get(device_id)
                if old is not None:
                    old.replaced.set()
                    slot.replacing = True
                self._streams[device_id] = slot
            return slot

    def _release(self, slot: Slot) -> None:
        with self._lock:
            if slot._released:
                return
            slot._released = True
            left = self._calls.get(slot.device_id, 0) - 1
            if left > 0:
                self._calls[slot.device_id] = left
            else:
                self._calls.pop(slot.device_id, None)
            self._long -= slot.long
            if self._streams.get(slot.device_id) is slot:
                del self._streams[slot.device_id]

    def calls(self, device_id: str) -> int:
        with self._lock:
            return self._calls.get(device_id, 0)
