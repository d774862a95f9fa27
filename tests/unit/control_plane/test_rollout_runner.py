"""The engine end to end through the runner's ports, on the simulated fleet (rollout_sim)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rollout_sim import make_sim

from control_plane.core.rollout_model import (
    DeviceJoined,
    Pause,
    Resume,
    TargetDevice,
)
from control_plane.core.rollout_spec import RolloutSpec, parse_spec
from control_plane.errors import Conflict


def spec(**overrides: Any) -> RolloutSpec:
    data: dict[str, Any] = {
        "model": "digits",
        "version": "2",
        "target": {"kind": "devices", "selector": {"site": "lab"}},
        "waves": [{"count": 2}, {"percent": 30}, {"percent": 100}],
        "bake_s": 30,
        "device_timeout_s": 60,
        "retries": 1,
        "disruption_budget": 4,
        "min_finished": 2,
        "success_threshold": 0.9,
    }
    data.update(overrides)
    return parse_spec(data)


def fleet(n: int, site: str = "lab") -> list[TargetDevice]:
    return [TargetDevice(f"dev-{i:02d}", "x86", {"site": site}, "old-sha") for i in range(n)]


def test_a_rollout_over_twenty_devices_completes_with_one_deploy_each() -> None:
    sim = make_sim()
    sim.runner.create("r1", spec(), fleet(20), {"x86": "new-sha"}, previous_version="1")
    final = sim.run("r1")
    assert final.phase == "completed"
    assert [w.status for w in final.waves] == ["passed", "passed", "passed"]
    assert sorted(d.device_id for d in sim.fleet.deploys()) == [f"dev-{i:02d}" for i in range(20)]
    assert set(sim.fleet.running.values()) == {"new-sha"}
    assert sim.fleet.rollbacks() == []
    assert "rollout.completed" in sim.audit.actions()
    assert sim.store.load("r1").outbox == []


def test_the_budget_holds_across_the_whole_run() -> None:
    sim = make_sim()
    sim.fleet.elsewhere = 1
    sim.runner.create("r1", spec(disruption_budget=3), fleet(12), {"x86": "new-sha"})
    peak = 0
    for _ in range(300):
        sim.clock.advance(1)
        for event in sim.fleet.answers():
            sim.runner.handle("r1", event)
        state = sim.runner.tick("r1")
        peak = max(peak, sum(d.status == "installing" for d in state.devices.values()))
        if state.phase != "running":
            break
    assert state.phase == "completed"
    assert peak == 2  # 3 minus the one installing for another rollout


def test_a_bad_version_trips_the_error_gate_in_the_first_wave_and_only_that_wave_rolls_back() -> (
    None
):
    sim = make_sim(new_error_rate=0.20)
    sim.runner.create("r1", spec(), fleet(20), {"x86": "new-sha"})
    final = sim.run("r1")
    assert final.phase == "aborted"
    assert final.waves[0].status == "failed" and "error_rate" in (final.waves[0].reason or "")
    first_wave = {d for d, s in final.devices.items() if s.wave == 0}
    assert {r.device_id for r in sim.fleet.rollbacks()} == first_wave
    assert {r.to_package for r in sim.fleet.rollbacks()} == {"old-sha"}
    assert {d.device_id for d in sim.fleet.deploys()} == first_wave  # the rest never touched
    failed = next(e for e in sim.audit.entries if e[0] == "rollout.wave_failed")
    numbers = {g["gate"]: g["numbers"] for g in failed[3]["gates"]}
    assert numbers["error_rate"]["error_rate"] == pytest.approx(0.20)


def test_a_slower_version_trips_the_latency_gate_and_rollback_all_reaches_every_device() -> None:
    sim = make_sim(new_p95_ms=40.0, old_p95_ms=10.0)
    sim.runner.create("r1", spec(on_failure="abort-and-rollback-all"), fleet(10), {"x86": "n"})
    final = sim.run("r1")
    assert final.phase == "rolled_back"
    assert "latency" in (final.waves[0].reason or "")
    touched = {d.device_id for d in sim.fleet.deploys()}
    assert touched and {r.device_id for r in sim.fleet.rollbacks()} == touched


def test_a_device_that_never_answers_is_retried_then_timed_out() -> None:
    sim = make_sim()
    devices = fleet(6)
    one_wave = spec(
        waves=[{"percent": 100}], retries=2, success_threshold=0.8, failure_threshold=0.2
    )
    sim.runner.create("r1", one_wave, devices, {"x86": "n"})
    first = sim.runner.tick("r1")
    mute = next(d for d, s in first.devices.items() if s.status == "installing")
    sim.fleet.behaviour[mute] = "mute"
    sim.fleet._due = [d for d in sim.fleet._due if d[1] != mute]
    final = sim.run("r1")
    assert [d.attempt for d in sim.fleet.deploys(mute)] == [1, 2, 3]
    assert final.devices[mute].status == "timed_out"
    assert final.phase == "completed"  # 5 of 6: 83% >= 80% succeeded, 17% <= 20% failed


def test_sigkill_between_save_and_apply_is_recovered_from_the_outbox_without_a_double_deploy() -> (
    None
):
    sim = make_sim()
    sim.runner.create("r1", spec(), fleet(8), {"x86": "n"})
    sim.clock.advance(5)
    events = sim.fleet.answers()
    sim.store.crash_after_save = True
    with pytest.raises(SystemExit):
        sim.runner.handle("r1", events[0])  # saved, then killed before applying
    outbox = sim.store.load("r1").outbox
    recovered = sim.runner.recover("r1")  # the restarted control plane
    assert recovered == len(outbox)
    assert sim.runner.recover("r1") == 0
    for event in events[1:]:
        sim.runner.handle("r1", event)
    final = sim.run("r1")
    assert final.phase == "completed"
    per_device = [d.device_id for d in sim.fleet.deploys()]
    assert len(per_device) == len(set(per_device)) == 8


def test_redelivering_the_same_outbox_twice_queues_nothing_new() -> None:
    sim = make_sim()
    sim.runner.create("r1", spec(), fleet(4), {"x86": "n"})
    sim.store.crash_after_save = True
    with pytest.raises(SystemExit):
        sim.runner.tick("r1")
    before = len(sim.fleet.commands)
    sim.runner.recover("r1")
    sim.runner.recover("r1")
    assert len(sim.fleet.commands) == before
    assert sim.store.load("r1").outbox == []


def test_a_late_joiner_gets_the_version_with_a_dynamic_tail() -> None:
    sim = make_sim()
    sim.runner.create("r1", spec(dynamic_tail=True), fleet(6), {"x86": "n"})
    sim.run("r1")
    late = TargetDevice("dev-late", "x86", {"site": "lab"}, "old-sha")
    sim.runner.handle("r1", DeviceJoined(late))
    sim.clock.advance(10)
    for event in sim.fleet.answers():
        sim.runner.handle("r1", event)
    state = sim.runner.tick("r1")
    assert [d.device_id for d in sim.fleet.deploys("dev-late")] == ["dev-late"]
    assert state.devices["dev-late"].status == "succeeded"


def test_pause_holds_the_rollout_and_resume_continues_it() -> None:
    sim = make_sim()
    sim.runner.create("r1", spec(), fleet(10), {"x86": "n"})
    sim.runner.handle("r1", Pause("ops@example", "change freeze"))
    sent = len(sim.fleet.deploys())
    for _ in range(50):
        sim.clock.advance(5)
        for event in sim.fleet.answers():
            sim.runner.handle("r1", event)
        paused = sim.runner.tick("r1")
    assert paused.phase == "paused" and len(sim.fleet.deploys()) == sent
    sim.runner.handle("r1", Resume("ops@example"))
    assert sim.run("r1").phase == "completed"


def test_two_runners_on_one_revision_conflict_instead_of_both_writing() -> None:
    sim = make_sim()
    sim.runner.create("r1", spec(), fleet(4), {"x86": "n"})
    stale = sim.store.load("r1")
    sim.runner.tick("r1")
    with pytest.raises(Conflict):
        sim.store.save("r1", stale.state, [], stale.revision)


def test_the_engine_imports_nothing_that_does_io() -> None:
    code = (
        "import sys, control_plane.core.rollout_runner, control_plane.core.rollout\n"
        "io = {'flask', 'sqlite3', 'sqlite_utils', 'grpc', 'paho', 'psycopg', 'werkzeug'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in io))\n"
    )
    root = str(Path(__file__).resolve().parents[3])  # this checkout, not another install
    env = {**os.environ, "PYTHONPATH": root}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.strip() == "[]"
