"""Health watches and rolled-back packages, kept across agent restarts.

A watch (started at, the previous version's health, the package watched) is
written when an install switches, so an agent restarted during the bake
period goes on watching until the period ends. A package rolled back after a
breached watch is quarantined: a later deploy of the same bytes is refused
unless the command says ``force``.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edge_agent.core.telemetry import HealthStats
from edge_agent.files import open_private


@dataclass
class Watch:
    started_at: float
    baseline: HealthStats | None
    package_id: str


class WatchList:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.watches: dict[str, Watch] = {}
        self.quarantine: dict[str, str] = {}  # package sha256 -> reason
        self._load()

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return  # nothing kept, or a torn file: start without (installs still verify)
        for name, w in data.get("watches", {}).items():
            baseline = HealthStats(**w["baseline"]) if w.get("baseline") else None
            self.watches[name] = Watch(float(w["started_at"]), baseline, str(w["package_id"]))
        self.quarantine = {str(k): str(v) for k, v in data.get("quarantine", {}).items()}

    def _save(self) -> None:
        data: dict[str, Any] = {
            "watches": {
                name: {
                    "started_at": w.started_at,
                    "baseline": asdict(w.baseline) if w.baseline else None,
                    "package_id": w.package_id,
                }
                for name, w in self.watches.items()
            },
            "quarantine": self.quarantine,
        }
        tmp = self.path.with_suffix(".tmp")
        with os.fdopen(open_private(tmp), "w") as handle:
            json.dump(data, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)

    def start(self, name: str, watch: Watch) -> None:
        with self._lock:
            self.watches[name] = watch
            self._save()

    def end(self, name: str) -> None:
        with self._lock:
            if self.watches.pop(name, None) is not None:
                self._save()

    def add_quarantine(self, sha256: str, reason: str) -> None:
        with self._lock:
            self.quarantine[sha256] = reason
            self._save()
