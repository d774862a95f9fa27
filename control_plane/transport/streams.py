"""The open command streams of this replica, woken by the change dispatcher (no store polling).

The dispatcher (``transport/changes.py``) hands :meth:`StreamRegistry.deliver`
the pending commands after every ``commands`` change and calls
:meth:`StreamRegistry.revoke` for a revoked device; a stream sleeps on its own
event until then. Downloads ask :meth:`StreamRegistry.is_revoked` per chunk.
"""

from __future__ import annotations

import threading

from control_plane.store.records import Command

__all__ = ["StreamRegistry"]


class _Stream:
    """One open command stream: woken with the device's pending commands, or revoked."""

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self.wake = threading.Event()
        self.pending: list[Command] | None = None
        self.revoked = False


class StreamRegistry:
    """The open command streams by device, and the devices revoked since this process began."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._streams: dict[str, set[_Stream]] = {}
        self._revoked: set[str] = set()

    def open(self, device_id: str) -> _Stream:
        stream = _Stream(device_id)
        with self._lock:
            self._streams.setdefault(device_id, set()).add(stream)
            stream.revoked = device_id in self._revoked
        return stream

    def close(self, stream: _Stream) -> None:
        with self._lock:
            streams = self._streams.get(stream.device_id, set())
            streams.discard(stream)
            if not streams:
                self._streams.pop(stream.device_id, None)

    def take(self, stream: _Stream) -> list[Command] | None:
        """The commands delivered since the last take (None: none), and re-arm the wake."""
        with self._lock:
            pending, stream.pending = stream.pending, None
            stream.wake.clear()
            return pending

    def wake(self, device_id: str) -> None:
        """Wake the device's streams (a newer one replaced them: they end)."""
        with self._lock:
            for stream in self._streams.get(device_id, ()):
                stream.wake.set()

    def deliver(self, pending: list[Command]) -> None:
        """Hand every open stream its device's pending commands (the dispatcher calls this)."""
        by_device: dict[str, list[Command]] = {}
        for command in pending:
            by_device.setdefault(command.device_id, []).append(command)
        with self._lock:
            for device_id, commands in by_device.items():
                for stream in self._streams.get(device_id, ()):
                    stream.pending = commands
                    stream.wake.set()

    def revoke(self, device_id: str) -> None:
        """End the device's streams and downloads (the dispatcher calls this)."""
        with self._lock:
            self._revoked.add(device_id)
            for stream in self._streams.get(device_id, ()):
                stream.revoked = True
                stream.wake.set()

    def is_revoked(self, device_id: str) -> bool:
        with self._lock:
            return device_id in self._revoked
