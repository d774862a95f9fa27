"""The change-notification port: a write that matters wakes whoever waits, in any process.

A write names a *topic* (``commands``, ``devices``, ...) inside its transaction;
once it commits, every :class:`Subscription` of every store instance on the same
database sees the topic. Backends differ only in how the news travels:

- SQLite: a local fan-out at commit, plus one thread per store polling
  ``PRAGMA data_version`` (it changes only for *other* connections' commits,
  whose topics are unknown, so those arrive as :data:`ANY`);
- PostgreSQL: ``pg_notify`` in the writing transaction and one ``LISTEN``
  connection per store; its own writes come back the same way.
"""

from __future__ import annotations

import threading
from typing import Protocol

COMMANDS = "commands"
DEVICES = "devices"  # enrollment, revocation, labels
CATALOG = "catalog"  # models, versions, aliases, packages
JOBS = "jobs"
TOKENS = "tokens"
ANY = "*"  # something changed; which is unknown (another process wrote to SQLite)
TOPICS = frozenset({COMMANDS, DEVICES, CATALOG, JOBS, TOKENS})


class Subscription(Protocol):
    def wait(self, timeout: float) -> frozenset[str]:
        """Topics changed since the last call; waits up to ``timeout`` s for one (empty then)."""
        ...

    def close(self) -> None: ...


class ChangeNotifier(Protocol):
    def subscribe(self) -> Subscription: ...

    def close(self) -> None: ...


class _Subscription:
    def __init__(self, hub: Broadcast) -> None:
        self._hub = hub
        self._pending: set[str] = set()

    def wait(self, timeout: float) -> frozenset[str]:
        with self._hub.cond:
            if not self._pending:
                self._hub.cond.wait_for(lambda: bool(self._pending), timeout)
            topics = frozenset(self._pending)
            self._pending.clear()
            return topics

    def close(self) -> None:
        with self._hub.cond:
            self._hub.subs.discard(self)


class Broadcast:
    """In-process fan-out: every subscription collects the topics published after it began."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.subs: set[_Subscription] = set()

    def subscribe(self) -> _Subscription:
        sub = _Subscription(self)
        with self.cond:
            self.subs.add(sub)
        return sub

    def publish(self, topics: set[str] | frozenset[str]) -> None:
        if not topics:
            return
        with self.cond:
            for sub in self.subs:
                sub._pending.update(topics)
            self.cond.notify_all()
