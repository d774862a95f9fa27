"""The rollouts service on a real (in-memory SQLite) store: create, ticks fed by acks, commands."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import pytest

from control_plane.core.rollout_model import Deploy, Rollout, action_to_dict
from control_plane.core.rollout_spec import RolloutBlocked, RolloutSpecError
from control_plane.errors import Conflict, NotFound
from control_plane.services.audit import AuditService
from control_plane.services.devices import DeviceService
from control_plane.services.ingest import IngestService
from control_plane.services.rollouts import BASELINE_LOOKBACK_S, RolloutService, WindowReadings
from control_plane.services.tokens import Principal
from control_plane.store.factory import open_repositories
from control_plane.store.records import ModelCard, NewDevice, Package
from control_plane.store.sql.store import SqlRepositories

OPERATOR = Principal("ops", "operator")
X86 = "x86-64-generic"
ARM = "rpi4"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def repos(clock: Clock) -> Iterator[SqlRepositories]:
    repos = open_repositories(":memory:")
    repos.models.add("digits", "", "ml", 1.0)
    repos.versions.add("digits", "7", ModelCard("digits", "sklearn", "ml"), None, 1.0)
    repos.versions.set_stage("digits", "7", "registered", "compiled", 1.0)
    sha = hashlib.sha256(b"digits 7 x86").hexdigest()
    repos.packages.put(Package(sha, "digits-7-x86", "digits", "7", X86, 1, 9, "/x", {}, 1.0))
    for i in range(4):
        repos.devices.add(NewDevice(f"cam-{i}", "h", labels={"site": "lab"}, profile_id=X86), 1.0)
        repos.devices.touch(f"cam-{i}", clock())
    yield repos
    repos.close()


def _service(repos: SqlRepositories, clock: Clock) -> RolloutService:
    return RolloutService(repos, AuditService(repos.audit, clock), clock=clock)


def _spec(**over: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": "digits",
        "version": "7",
        "target": {"kind": "devices", "selector": {"site": "lab"}},
        "waves": [{"count": 1}, {"percent": 100}],
        "bake_s": 10,
        "min_finished": 1,
        "gates": {"error_rate": {"enabled": False}, "latency": {"enabled": False}},
    }
    return {**spec, **over}


def _ack_all(repos: SqlRepositories, ok: bool = True, **result: Any) -> list[str]:
    acked = []
    for command in repos.commands.pending():
        repos.commands.ack(command.id, command.device_id, ok, result, 2.0)
        acked.append(command.device_id)
    return acked


def test_a_two_wave_rollout_completes_on_acks_and_ticks(
    repos: SqlRepositories, clock: Clock
) -> None:
    service = _service(repos, clock)
    rollout = service.create(_spec(), OPERATOR)
    first = [c.device_id for c in repos.commands.pending()]
    assert len(first) == 1 and rollout.devices[first[0]].wave == 0
    assert repos.commands.pending()[0].body["rollout"] == rollout.id
    _ack_all(repos)
    assert service.tick(rollout.id).waves[0].status == "baking"
    clock.now += 11
    for device in repos.devices.list().items:
        repos.devices.touch(device.id, clock())
    after = service.tick(rollout.id)
    assert after.waves[0].status == "passed" and after.waves[1].status == "deploying"
    assert len(repos.commands.pending()) == 3
    _ack_all(repos)
    service.tick(rollout.id)
    clock.now += 11
    for device in repos.devices.list().items:
        repos.devices.touch(device.id, clock())
    done = service.tick(rollout.id)
    assert done.phase == "completed", done.reason
    assert {d.status for d in done.devices.values()} == {"succeeded"}
    actions = {e.action for e in repos.audit.list(subject=f"rollout:{rollout.id}").items}
    assert {"rollout.create", "rollout.wave_passed", "rollout.promoted"} <= actions
    # a tick re-feeds nothing: every ack was fed once
    assert repos.rollouts.unfed_acks(rollout.id) == []


def test_selftest_failure_fails_the_wave_and_rolls_it_back(
    repos: SqlRepositories, clock: Clock
) -> None:
    service = _service(repos, clock)
    rollout = service.create(_spec(), OPERATOR)
    [device] = _ack_all(repos, ok=False, error="outputs differ", step="selftest")
    after = service.tick(rollout.id)
    assert after.devices[device].status == "failed"
    assert after.devices[device].reason == "self-test: outputs differ"
    assert after.waves[0].status == "failed" and after.phase == "aborted"
    [rollback] = repos.commands.pending()
    assert (rollback.kind, rollback.device_id, rollback.body["model_name"]) == (
        "rollback",
        device,
        "digits",
    )


def test_operator_commands_pause_resume_and_conflict(repos: SqlRepositories, clock: Clock) -> None:
    service = _service(repos, clock)
    rollout = service.create(_spec(), OPERATOR)
    assert service.act(rollout.id, "pause", OPERATOR, reason="lunch").phase == "paused"
    with pytest.raises(Conflict):
        service.act(rollout.id, "pause", OPERATOR)
    assert service.act(rollout.id, "resume", OPERATOR).phase == "running"
    newest = repos.audit.list(limit=1).items[0]
    assert (newest.actor, newest.action, newest.after) == (
        "ops",
        "rollout.resume",
        {"phase": "running", "current_wave": 0},
    )
    with pytest.raises(NotFound, match="rollout 'nope'"):
        service.act("nope", "pause", OPERATOR)


def test_create_refuses_a_profile_without_a_package_naming_it(
    repos: SqlRepositories, clock: Clock
) -> None:
    repos.devices.add(NewDevice("pi-1", "h", labels={"site": "lab"}, profile_id=ARM), 1.0)
    with pytest.raises(RolloutBlocked, match="no package for profile rpi4 \\(1 device\\)"):
        _service(repos, clock).create(_spec(), OPERATOR)
    assert repos.commands.pending() == [] and repos.rollouts.list().items == []


def test_create_refuses_bad_specs_unknown_versions_and_unknown_aliases(
    repos: SqlRepositories, clock: Clock
) -> None:
    service = _service(repos, clock)
    with pytest.raises(RolloutSpecError, match="waves"):
        service.create(_spec(waves=[]), OPERATOR)
    with pytest.raises(NotFound):
        service.create(_spec(version="8"), OPERATOR)
    alias = {"kind": "alias", "alias": "scorer:prod"}
    with pytest.raises(NotFound, match="function alias 'scorer:prod' does not exist"):
        service.create(_spec(target=alias, waves=[{"traffic": 100}]), OPERATOR)


def test_a_reapplied_outbox_queues_no_second_command(repos: SqlRepositories, clock: Clock) -> None:
    service = _service(repos, clock)
    rollout = service.create(_spec(), OPERATOR)
    [sent] = repos.commands.pending()
    attempt = int(sent.body["attempt"])
    key = f"{rollout.id}:{sent.device_id}:{attempt}"
    # what a SIGKILL between the save and the apply leaves: the deploy still in the outbox
    deploy = Deploy(sent.device_id, sent.body["sha256"], attempt, key, 600.0)
    stored = repos.rollouts.load(rollout.id)
    repos.rollouts.save(rollout.id, stored.state, [action_to_dict(deploy)], stored.revision)
    assert service.recover_all() == 1
    assert repos.commands.pending() == [sent]  # the same command, no second one
    assert repos.rollouts.load(rollout.id).outbox == []


def _window(
    version: str, requests: int, errors: int, latencies: list[float], device: str, seq: int
) -> tuple[int, str, str]:
    import base64

    from datasketches import kll_floats_sketch

    sketch = kll_floats_sketch(200)
    for value in latencies:
        sketch.update(value)
    kll = base64.b64encode(sketch.serialize()).decode("ascii") if latencies else None
    body = {
        "kind": "telemetry_window",
        "device_id": device,
        "sequence": seq,
        "model_name": "digits",
        "model_version": version,
        "started_at": 1.0,
        "ended_at": 2.0,
        "requests": requests,
        "errors": errors,
        "invalid": 0,
        "rows": requests,
        "latency_ms": {"kll": kll},
    }
    return seq, "telemetry_window", json.dumps(body)


def test_gate_readings_sum_windows_per_version_and_merge_p95(
    repos: SqlRepositories, clock: Clock
) -> None:
    service = _service(repos, clock)
    rollout = service.create(_spec(), OPERATOR)
    uploads = [
        _window("6", 100, 1, [1.0] * 100, "cam-0", 1),
        _window("7", 150, 6, [float(i) for i in range(1, 101)], "cam-0", 2),
        _window("7", 50, 0, [], "cam-0", 3),  # no sketch: counts only
    ]
    ingest = IngestService(repos, DeviceService(repos), clock=clock)
    assert ingest.ingest("cam-0", uploads, "grpc").acked == [1, 2, 3]
    assert ingest.ingest("cam-1", [_window("7", 999, 999, [], "cam-1", 1)], "grpc").acked == [1]
    readings = WindowReadings(repos).read(
        Rollout.from_dict(rollout.to_dict()), 0, ["cam-0"], clock() - 1, clock()
    )
    assert readings is not None
    assert (readings.new.requests, readings.new.failures) == (200, 6)  # cam-1 is not a subject
    assert readings.new.p95_ms == pytest.approx(95.0, abs=2.0)
    assert readings.baseline is not None
    assert (readings.baseline.requests, readings.baseline.failures, readings.baseline.p95_ms) == (
        100,
        1,
        1.0,
    )
    assert WindowReadings(repos).read(rollout, 0, ["cam-2"], clock() - 1, clock()) is None
    later = WindowReadings(repos).read(rollout, 0, ["cam-0"], clock() + 1, clock())
    assert later is not None and later.new.requests == 0  # new: only since the wave started
    assert later.baseline is not None and later.baseline.requests == 100  # the lookback
    lookback = max(rollout.spec.bake_s, BASELINE_LOOKBACK_S)
    gone = WindowReadings(repos).read(rollout, 0, ["cam-0"], clock() + lookback + 1, clock())
    assert gone is None  # older than the lookback: nothing


def _status(repos: SqlRepositories, device: str, seq: int, **fields: Any) -> None:
    """A status report as the agent sends it, through ingest (which keeps the device's slots)."""
    body = {"kind": "status", "device_id": device, "sequence": seq, "at": 5.0, **fields}
    # (``at`` is the device's clock; 5.0 is long before any deploy of these tests)
    ingest = IngestService(repos, DeviceService(repos))
    assert ingest.ingest(device, [(seq, "status", json.dumps(body))], "grpc").acked == [seq]


def test_rollback_acks_become_the_devices_rollback_outcome(
    repos: SqlRepositories, clock: Clock
) -> None:
    service = _service(repos, clock)
    rollout = service.create(_spec(waves=[{"count": 2}, {"percent": 100}]), OPERATOR)
    first, second = sorted(c.device_id for c in repos.commands.pending())
    for command in repos.commands.pending():
        ok = command.device_id == first
        repos.commands.ack(command.id, command.device_id, ok, {"error": "bad", "step": "load"}, 2.0)
    service.tick(rollout.id)
    clock.now += 11
    after = service.tick(rollout.id)  # 1 of 2 failed > 10%: the wave fails and rolls back
    assert after.phase == "aborted" and after.devices[first].rollback == "sent"
    assert after.devices[second].rollback == "sent"
    rollbacks = {c.device_id: c for c in repos.commands.pending()}
    assert set(rollbacks) == {first, second}
    repos.commands.ack(rollbacks[first].id, first, True, {"package_id": "digits-6"}, 3.0)
    error = {"error": "no previous version to roll back to", "step": "rollback"}
    repos.commands.ack(rollbacks[second].id, second, False, error, 3.0)
    service.tick_all()  # an aborted rollout is still fed its rollback acks
    done = service.get(rollout.id)
    assert (done.devices[first].rollback, done.devices[second].rollback) == ("done", "failed")
    assert done.devices[second].rollback_reason == "no previous version to roll back to"
    wave = service.summary(rollout.id)["waves"][0]["devices"]
    assert (wave["rolled_back"], wave["rollback_done"], wave["rollback_failed"]) == (2, 1, 1)
    assert repos.rollouts.unfed_acks(rollout.id) == []
    service.tick_all()  # fed once: nothing changes
    assert service.get(rollout.id).to_dict() == done.to_dict()


def test_a_health_watch_rollback_on_the_device_fails_it_and_is_owed_no_rollback(
    repos: SqlRepositories, clock: Clock
) -> None:
    service = _service(repos, clock)
    rollout = service.create(_spec(waves=[{"count": 2}, {"percent": 100}]), OPERATOR)
    package = next(iter(rollout.packages.values()))
    first, second = sorted(c.device_id for c in repos.commands.pending())
    _ack_all(repos)
    assert service.tick(rollout.id).waves[0].status == "baking"
    # the first device's health watch breaches: it rolls itself back and says so
    _status(repos, first, 7, event="rolled_back", model_name="digits", package_id="digits-6",
            sha256="c" * 64, from_package_id="digits-7-x86", from_sha256=package,
            cause="health", reason="error rate 0.31 > 0.05", at=clock())  # fmt: skip
    assert repos.devices.get(first).slots["digits"]["cause"] == "health"
    after = service.tick(rollout.id)
    d = after.devices[first]
    assert (d.status, d.reverted) == ("failed", True)
    assert d.reason == "health watch rolled it back: error rate 0.31 > 0.05"
    assert after.waves[0].status == "failed" and after.phase == "aborted"
    rollbacks = [c.device_id for c in repos.commands.pending()]
    assert rollbacks == [second]  # the reverted device went back by itself


def test_a_commanded_rollback_report_is_not_a_health_failure(
    repos: SqlRepositories, clock: Clock
) -> None:
    service = _service(repos, clock)
    rollout = service.create(_spec(), OPERATOR)
    package = next(iter(rollout.packages.values()))
    [device] = _ack_all(repos)
    _status(repos, device, 3, event="rolled_back", model_name="digits", sha256="c" * 64,
            from_sha256=package, cause="command", reason="operator")  # fmt: skip
    assert service.tick(rollout.id).devices[device].status == "succeeded"


def test_devices_report_what_they_run_and_a_device_already_on_the_package_is_not_sent_it(
    repos: SqlRepositories, clock: Clock
) -> None:
    sha = hashlib.sha256(b"digits 7 x86").hexdigest()
    _status(repos, "cam-0", 2, event="installed", model_name="digits", sha256=sha,
            package_id="digits-7-x86")  # fmt: skip
    _status(repos, "cam-0", 1, event="installed", model_name="digits", sha256="a" * 64)  # older
    _status(repos, "cam-1", 4, event="installed", model_name="digits", sha256="a" * 64)
    assert repos.devices.get("cam-0").slots["digits"]["sha256"] == sha
    service = _service(repos, clock)
    rollout = service.create(_spec(waves=[{"percent": 100}]), OPERATOR)
    assert rollout.devices["cam-0"].status == "succeeded"
    assert rollout.devices["cam-0"].reason == "already runs this package"
    assert rollout.devices["cam-1"].previous_package == "a" * 64  # what a rollback returns to
    sent = sorted(c.device_id for c in repos.commands.pending())
    assert sent == ["cam-1", "cam-2", "cam-3"]


def test_a_health_rollback_reported_before_this_deploy_is_not_this_rollouts(
    repos: SqlRepositories, clock: Clock
) -> None:
    sha = hashlib.sha256(b"digits 7 x86").hexdigest()
    # an earlier rollout of the same package was rolled back by the device's health watch
    _status(repos, "cam-0", 3, event="rolled_back", model_name="digits", sha256="c" * 64,
            from_sha256=sha, cause="health", reason="old breach")  # fmt: skip
    service = _service(repos, clock)
    rollout = service.create(_spec(waves=[{"percent": 100}]), OPERATOR)
    assert rollout.devices["cam-0"].previous_package == "c" * 64
    after = service.tick(rollout.id)  # deployed now, not answered yet: not a revert
    assert (after.devices["cam-0"].status, after.devices["cam-0"].reverted) == ("installing", False)
