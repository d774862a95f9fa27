"""What this device already executed: control-plane commands are run once.

Every command carries the device's ``execution_version``. The log records a
version when it starts (before it runs) and keeps its result when it ends
(SQLite in the state directory), so a command redelivered after a lost ack
(broker restart, new gRPC stream) is acked again with the same result and not
executed twice, and one interrupted by a crash is known as such: it runs again,
which the commands are written to survive (a deploy of the package already
active is a no-op).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.files import private_file

logger = logging.getLogger(__name__)

KEEP = 1000  # results remembered; older versions are known executed by their number


@dataclass(frozen=True)
class CommandResult:
    ok: bool
    error: str
    detail: dict[str, Any]


class CommandLog:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        private_file(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS executed (version INTEGER PRIMARY KEY, command_id TEXT, "
            "ok INTEGER, error TEXT, detail TEXT)"
        )

    def result(self, version: int) -> CommandResult | None:
        """The result of ``version`` if it ran to its end (or is older than the results kept)."""
        with self._lock:
            row = self._db.execute(
                "SELECT ok, error, detail FROM executed WHERE version = ?", (version,)
            ).fetchone()
            if row is None:
                (oldest,) = self._db.execute("SELECT MIN(version) FROM executed").fetchone()
                if oldest is not None and version < oldest:
                    return CommandResult(True, "", {"note": "executed long ago"})
                return None
        if row[0] is None:  # started, never finished: a crash interrupted it
            return None
        return CommandResult(bool(row[0]), str(row[1]), json.loads(row[2]))

    def start(self, version: int, command_id: str) -> bool:
        """Record that ``version`` starts; True if an earlier start was interrupted."""
        with self._lock:
            row = self._db.execute(
                "SELECT ok FROM executed WHERE version = ?", (version,)
            ).fetchone()
            self._db.execute(
                "INSERT OR IGNORE INTO executed VALUES (?, ?, NULL, '', '{}')",
                (version, command_id),
            )
        return row is not None

    def record(self, version: int, command_id: str, result: CommandResult) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO executed VALUES (?, ?, ?, ?, ?)",
                (version, command_id, int(result.ok), result.error, json.dumps(result.detail)),
            )
            self._db.execute(
                "DELETE FROM executed WHERE version <= (SELECT MAX(version) FROM executed) - ?",
                (KEEP,),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()
