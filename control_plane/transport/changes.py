"""The one path from a store change to the devices: the change notifier, then the transports.

An operator's command, from this process, the CLI or another replica, is a row
in the store; the store's notifier announces the ``commands`` topic, and one
thread here re-reads the pending commands once and hands them to every
transport (the MQTT bridge publishes the new ones, the gRPC streams of those
devices wake). A revocation is the ``devices`` topic: the broker login goes,
the device's gRPC streams and downloads end. ``*`` (another process wrote to
SQLite, or PostgreSQL's LISTEN reconnected) re-reads both.

A pass that fails (the store is busy) keeps its topics and is retried; no
change is dropped because one read failed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from control_plane.services.commands import CommandService
from control_plane.services.devices import DeviceService
from control_plane.store.notify import ANY, COMMANDS, DEVICES, ChangeNotifier, Subscription
from control_plane.store.records import Command

logger = logging.getLogger(__name__)

RETRY_SECONDS = 0.5

PendingHandler = Callable[[list[Command]], None]
RevokedHandler = Callable[[str], None]


class ChangeDispatcher:
    """One subscription, one thread; transports register handlers before :meth:`start`."""

    def __init__(
        self, notifier: ChangeNotifier, commands: CommandService, devices: DeviceService
    ) -> None:
        self.notifier = notifier
        self.commands = commands
        self.devices = devices
        self.on_pending: list[PendingHandler] = []
        self.on_revoked: list[RevokedHandler] = []
        self.passes = 0
        self._revoked: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Subscribe, apply the current state once (here: serve starts reconciled), then follow."""
        subscription = self.notifier.subscribe()  # before reading: nothing falls in between
        todo: set[str] = {COMMANDS, DEVICES}
        try:
            self.apply(frozenset(todo))
            todo.clear()
        except Exception:  # the thread retries
            logger.exception("applying the store's state at start; retrying")
        self._thread = threading.Thread(
            target=self._run, args=(subscription, todo), name="change-dispatcher", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self, sub: Subscription, todo: set[str]) -> None:
        try:
            while not self._stop.is_set():
                if todo:
                    try:
                        self.apply(frozenset(todo))
                        todo.clear()
                    except Exception as exc:  # the store is busy or away: keep them, retry
                        logger.warning("applying store changes %s: %s; retrying", sorted(todo), exc)
                        self._stop.wait(RETRY_SECONDS)
                todo |= sub.wait(RETRY_SECONDS if todo else 1.0)
        finally:
            sub.close()

    def apply(self, topics: frozenset[str]) -> None:
        """Re-read what the topics say changed and tell the transports."""
        with self._lock:
            self.passes += 1
            if DEVICES in topics or ANY in topics:
                for device_id in self.devices.revoked_ids():
                    if device_id not in self._revoked:
                        for handler in self.on_revoked:
                            handler(device_id)
                        self._revoked.add(device_id)
            if COMMANDS in topics or ANY in topics:
                pending = self.commands.pending()
                for on_pending in self.on_pending:
                    on_pending(pending)
