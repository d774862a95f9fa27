"""A tiny simulated fleet behind the rollout runner's ports (tests only).

Every port is a dict or a list; devices answer a deploy after ``answer_after``
simulated seconds according to their behaviour (ok, fail, selftest, mute), and
the readings source reports each version's error rate and p95 over the devices
asked about. Time is a FakeClock advanced by the test: nothing sleeps.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from control_plane.core.rollout_gates import VersionStats, WaveReadings
from control_plane.core.rollout_model import (
    Deploy,
    DeviceFailed,
    DeviceInstalled,
    DeviceSelfTestFailed,
    Event,
    PointAlias,
    Rollback,
    Rollout,
    SetTraffic,
)
from control_plane.core.rollout_runner import PortRunner, StoredRollout
from control_plane.errors import Conflict, NotFound

START = 1_700_000_000.0  # Tuesday 2023-11-14 22:13:20 UTC


@dataclass
class FakeClock:
    t: float = START

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> float:
        self.t += seconds
        return self.t


@dataclass
class MemoryRolloutStore:
    """JSON in, JSON out, so nothing survives that a real store would not keep."""

    rows: dict[str, str] = field(default_factory=dict)
    crash_after_save: bool = False

    def create(self, rollout_id: str, state: Mapping[str, Any], outbox: Sequence[Any]) -> int:
        if rollout_id in self.rows:
            raise Conflict(f"rollout {rollout_id} exists")
        self.rows[rollout_id] = json.dumps({"state": state, "revision": 1, "outbox": list(outbox)})
        return 1

    def load(self, rollout_id: str) -> StoredRollout:
        if rollout_id not in self.rows:
            raise NotFound(rollout_id)
        row = json.loads(self.rows[rollout_id])
        return StoredRollout(row["state"], row["revision"], row["outbox"])

    def save(
        self,
        rollout_id: str,
        state: Mapping[str, Any],
        outbox: Sequence[Mapping[str, Any]],
        expected_revision: int,
    ) -> int:
        row = json.loads(self.rows[rollout_id])
        if row["revision"] != expected_revision:
            raise Conflict(f"rollout {rollout_id} moved to revision {row['revision']}")
        row = {
            "state": state,
            "revision": expected_revision + 1,
            "outbox": row["outbox"] + list(outbox),
        }
        self.rows[rollout_id] = json.dumps(row)
        if self.crash_after_save:
            self.crash_after_save = False
            raise SystemExit("simulated SIGKILL after the save, before the actions")
        return expected_revision + 1

    def clear_outbox(self, rollout_id: str, upto_revision: int) -> None:
        row = json.loads(self.rows[rollout_id])
        if row["revision"] == upto_revision:
            row["outbox"] = []
            self.rows[rollout_id] = json.dumps(row)


@dataclass
class FakeFleet:
    """Answers deploys; ``behaviour`` per device: ok (default), fail, selftest, mute."""

    clock: FakeClock
    behaviour: dict[str, str] = field(default_factory=dict)
    answer_after: float = 5.0
    elsewhere: int = 0
    commands: dict[str, tuple[str, Deploy | Rollback]] = field(default_factory=dict)
    redelivered: int = 0
    running: dict[str, str | None] = field(default_factory=dict)
    _due: list[tuple[float, str, str]] = field(default_factory=list)

    def deploy(self, rollout_id: str, action: Deploy) -> None:
        if action.execution_key in self.commands:
            self.redelivered += 1
            return
        self.commands[action.execution_key] = (rollout_id, action)
        if self.behaviour.get(action.device_id, "ok") != "mute":
            due = self.clock.now() + self.answer_after
            self._due.append((due, action.device_id, action.package))

    def rollback(self, rollout_id: str, action: Rollback) -> None:
        if action.execution_key in self.commands:
            self.redelivered += 1
            return
        self.commands[action.execution_key] = (rollout_id, action)
        self.running[action.device_id] = action.to_package

    def installing_elsewhere(self, rollout_id: str) -> int:
        return self.elsewhere

    def deploys(self, device_id: str | None = None) -> list[Deploy]:
        return [
            a
            for _, a in self.commands.values()
            if isinstance(a, Deploy) and (device_id is None or a.device_id == device_id)
        ]

    def rollbacks(self) -> list[Rollback]:
        return [a for _, a in self.commands.values() if isinstance(a, Rollback)]

    def answers(self) -> list[Event]:
        """The answers due by now, in the order they fall due."""
        now, events = self.clock.now(), []
        due = sorted(d for d in self._due if d[0] <= now)
        self._due = [d for d in self._due if d[0] > now]
        for _, device_id, package in due:
            kind = self.behaviour.get(device_id, "ok")
            if kind == "fail":
                events.append(DeviceFailed(device_id, "disk full"))
            elif kind == "selftest":
                events.append(DeviceSelfTestFailed(device_id, "test vector 2 off by 0.4"))
            else:
                self.running[device_id] = package
                events.append(DeviceInstalled(device_id))
        return events


@dataclass
class FakeReadings:
    """Per-version telemetry: ``requests`` per subject, error rate and p95 per version."""

    requests: int = 200
    new_error_rate: float = 0.01
    new_p95_ms: float = 10.0
    old_error_rate: float = 0.01
    old_p95_ms: float = 10.0
    asked: list[tuple[int, tuple[str, ...]]] = field(default_factory=list)

    def read(
        self, rollout: Rollout, wave: int, subjects: Sequence[str], since: float, now: float
    ) -> WaveReadings | None:
        self.asked.append((wave, tuple(subjects)))
        if not subjects:
            return None
        n = self.requests * len(subjects)
        new = VersionStats(n, round(n * self.new_error_rate), self.new_p95_ms)
        old = VersionStats(n, round(n * self.old_error_rate), self.old_p95_ms)
        return WaveReadings(at=now, new=new, baseline=old)


@dataclass
class FakeTraffic:
    moves: list[SetTraffic] = field(default_factory=list)
    pointed: list[PointAlias] = field(default_factory=list)

    def set_traffic(self, action: SetTraffic) -> None:
        self.moves.append(action)

    def point(self, action: PointAlias) -> None:
        self.pointed.append(action)


@dataclass
class MemoryAudit:
    entries: list[tuple[str, str, float, dict[str, Any]]] = field(default_factory=list)

    def record(self, action: str, subject: str, at: float, detail: Mapping[str, Any]) -> None:
        self.entries.append((action, subject, at, dict(detail)))

    def actions(self) -> list[str]:
        return [e[0] for e in self.entries]


@dataclass
class Sim:
    clock: FakeClock
    store: MemoryRolloutStore
    fleet: FakeFleet
    readings: FakeReadings
    traffic: FakeTraffic
    audit: MemoryAudit
    runner: PortRunner

    def run(self, rollout_id: str, *, dt: float = 5.0, max_steps: int = 1000) -> Rollout:
        """Advance time until the rollout stops moving (completed, paused, aborted, rolled back)."""
        rollout = Rollout.from_dict(self.store.load(rollout_id).state)
        for _ in range(max_steps):
            if rollout.phase != "running":
                return rollout
            self.clock.advance(dt)
            answers = self.fleet.answers()
            if answers:
                self.runner.handle_many(rollout_id, answers)
            rollout = self.runner.tick(rollout_id)
        return rollout


def make_sim(behaviour: Mapping[str, str] | None = None, **readings: Any) -> Sim:
    clock = FakeClock()
    store = MemoryRolloutStore()
    fleet = FakeFleet(clock, dict(behaviour or {}))
    fake_readings = FakeReadings(**readings)
    traffic, audit = FakeTraffic(), MemoryAudit()
    runner = PortRunner(clock, store, fleet, fake_readings, traffic, audit)
    return Sim(clock, store, fleet, fake_readings, traffic, audit, runner)
