"""Function aliases and alias-target rollouts on a real (in-memory SQLite) store.

The rollout moves the alias' split in the store wave by wave, reads its gates from the
function's telemetry windows (its telemetry device, new version against the previous
one), and on a failed gate sends 100% back to the previous version.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from typing import Any

import pytest

from control_plane.core.rollout_spec import RolloutBlocked
from control_plane.errors import Conflict, InvalidInput, NotFound
from control_plane.services.audit import AuditService
from control_plane.services.function_aliases import FunctionAliasService
from control_plane.services.ingest import new_window
from control_plane.services.rollouts import RolloutService
from control_plane.services.tokens import Principal
from control_plane.store.factory import open_repositories
from control_plane.store.records import ModelCard, NewDevice, NewUpload, Package
from control_plane.store.repos import RevisionConflict
from control_plane.store.sql.store import SqlRepositories
from edge_agent.core.windows import TelemetryWindow

OPERATOR = Principal("ops", "operator")
ALIAS = "scorer:live"


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
    for version in ("6", "7", "8"):
        repos.versions.add("digits", version, ModelCard("d", "s", "ml"), None, 1.0)
        repos.versions.set_stage("digits", version, "registered", "compiled", 1.0)
    for version in ("6", "7"):
        sha = hashlib.sha256(f"digits {version}".encode()).hexdigest()
        repos.packages.put(
            Package(sha, f"digits-{version}", "digits", version, "x86", 1, 9, "/x", {}, 1.0)
        )
    repos.devices.add(NewDevice("scorer", "h"), 1.0)  # the function's telemetry identity
    yield repos
    repos.close()


def _aliases(repos: SqlRepositories, clock: Clock) -> FunctionAliasService:
    return FunctionAliasService(repos, AuditService(repos.audit, clock), clock)


def _rollouts(repos: SqlRepositories, clock: Clock) -> RolloutService:
    return RolloutService(repos, AuditService(repos.audit, clock), clock=clock)


def _spec(**over: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": "digits",
        "version": "7",
        "target": {"kind": "alias", "alias": ALIAS},
        "waves": [{"traffic": 10}, {"traffic": 50}, {"traffic": 100}],
        "bake_s": 10,
        "gates": {"latency": {"min_requests": 100}, "error_rate": {"min_requests": 100}},
    }
    return {**spec, **over}


SEQ = iter(range(1, 10**6))


def _window(
    version: str, requests: int, errors: int, latency_ms: float, alias: str | None = ALIAS
) -> NewUpload:
    from datasketches import kll_floats_sketch

    sketch = kll_floats_sketch(200)
    for _ in range(requests):
        sketch.update(latency_ms)
    seq = next(SEQ)
    body = {
        "kind": "telemetry_window",
        "device_id": "scorer",
        "sequence": seq,
        "started_at": 1.0,
        "ended_at": 2.0,
        "model_name": "digits",
        "model_version": version,
        "requests": requests,
        "errors": errors,
        "invalid": 0,
        "rows": requests,
        "latency_ms": {"kll": base64.b64encode(sketch.serialize()).decode("ascii")},
    }
    if alias is not None:
        body["alias"] = alias
    return NewUpload(seq, "telemetry_window", json.dumps(body))


def _add(repos: SqlRepositories, device: str, items: list[NewUpload], via: str, at: float) -> None:
    """Store the uploads with their windows indexed, as ingest does (the gates read those)."""
    windows = {u.seq: new_window(TelemetryWindow.model_validate_json(u.body_json)) for u in items}
    repos.uploads.add(device, items, via, at, windows)


def _traffic(repos: SqlRepositories) -> dict[str, int]:
    return repos.function_aliases.get(ALIAS).routes


def test_set_get_and_the_refusals_name_the_problem(repos: SqlRepositories, clock: Clock) -> None:
    aliases = _aliases(repos, clock)
    made = aliases.set(ALIAS, "digits", {"6": 100}, OPERATOR)
    assert (made.routes, made.telemetry_device, made.revision) == ({"6": 100}, "scorer", 1)
    moved = aliases.set(ALIAS, "digits", {"7": 10, "6": 90}, OPERATOR)
    assert list(moved.routes.items()) == [("6", 90), ("7", 10)]  # primary first
    view = aliases.view(moved)
    assert view["version"] == "6" and view["packages"]["7"] == {
        "x86": hashlib.sha256(b"digits 7").hexdigest()
    }
    with pytest.raises(InvalidInput, match="sum to 95"):
        aliases.set(ALIAS, "digits", {"6": 90, "7": 5}, OPERATOR)
    with pytest.raises(InvalidInput, match="FUNCTION:ALIAS"):
        aliases.set("no-colon", "digits", {"6": 100}, OPERATOR)
    with pytest.raises(NotFound, match="no version '9'"):
        aliases.set(ALIAS, "digits", {"9": 100}, OPERATOR)
    with pytest.raises(RevisionConflict, match="revision 2"):
        aliases.set(ALIAS, "digits", {"6": 100}, OPERATOR, expected_revision=1)
    entry = repos.audit.list(action="function_alias.set").items[0]
    assert entry.actor == "ops" and entry.after is not None and entry.after["revision"] == 2


def test_an_alias_rollout_moves_traffic_on_passing_gates_and_completes(
    repos: SqlRepositories, clock: Clock
) -> None:
    _aliases(repos, clock).set(ALIAS, "digits", {"6": 100}, OPERATOR)
    service = _rollouts(repos, clock)
    rollout = service.create(_spec(), OPERATOR)
    assert rollout.previous_version == "6" and _traffic(repos) == {"6": 90, "7": 10}
    with pytest.raises(Conflict, match=f"rollout {rollout.id} is moving"):
        _aliases(repos, clock).set(ALIAS, "digits", {"6": 100}, OPERATOR)
    for expected in ({"6": 50, "7": 50}, {"7": 100}):
        clock.now += 1
        # the function's containers send windows of both versions while the wave runs
        _add(
            repos, "scorer", [_window("7", 200, 1, 2.0), _window("6", 200, 1, 2.0)], "grpc", clock()
        )
        service.tick(rollout.id)
        assert _traffic(repos) != expected  # still baking: readings before the bake's end
        clock.now += 11
        _add(repos, "scorer", [_window("7", 200, 1, 2.0)], "grpc", clock())
        service.tick(rollout.id)
        assert _traffic(repos) == expected
    clock.now += 12
    _add(repos, "scorer", [_window("7", 200, 1, 2.0)], "grpc", clock())
    done = service.tick(rollout.id)
    assert done.phase == "completed" and _traffic(repos) == {"7": 100}
    moves = repos.audit.list(action="function_alias.traffic", limit=10).items
    assert [m.after["routes"] if m.after else None for m in reversed(moves)] == [
        {"6": 90, "7": 10},
        {"6": 50, "7": 50},
        {"7": 100},
    ]
    assert all(m.actor == "rollouts" for m in moves)


def test_a_worse_version_fails_the_gate_and_the_alias_returns_to_the_previous(
    repos: SqlRepositories, clock: Clock
) -> None:
    _aliases(repos, clock).set(ALIAS, "digits", {"6": 100}, OPERATOR)
    service = _rollouts(repos, clock)
    rollout = service.create(_spec(), OPERATOR)
    clock.now += 1
    # the new version errs on 10% of its requests (limit: 5%, and previous 1% + 2 points);
    # another alias of the same function (its own windows, healthy) does not dilute that
    _add(
        repos,
        "scorer",
        [
            _window("7", 200, 20, 2.0),
            _window("6", 1800, 18, 2.0, alias=None),  # a container without an alias counts
            _window("7", 5000, 0, 2.0, alias="scorer:canary"),
        ],
        "grpc",
        clock(),
    )
    failed = service.tick(rollout.id)
    assert failed.phase == "aborted" and _traffic(repos) == {"6": 100}
    gates = {g["gate"]: g for g in failed.waves[0].gates}
    assert gates["error_rate"]["verdict"] == "fail"
    assert gates["error_rate"]["numbers"]["error_rate"] == pytest.approx(0.10)
    assert gates["error_rate"]["numbers"]["baseline_error_rate"] == pytest.approx(0.01)
    assert gates["error_rate"]["numbers"]["limit"] == pytest.approx(0.03)


def test_a_slower_version_fails_the_latency_gate_against_the_previous(
    repos: SqlRepositories, clock: Clock
) -> None:
    _aliases(repos, clock).set(ALIAS, "digits", {"6": 100}, OPERATOR)
    service = _rollouts(repos, clock)
    rollout = service.create(_spec(on_failure="abort-and-rollback-all"), OPERATOR)
    clock.now += 1
    _add(repos, "scorer", [_window("7", 200, 0, 9.0), _window("6", 1800, 0, 2.0)], "grpc", clock())
    failed = service.tick(rollout.id)
    latency = {g["gate"]: g for g in failed.waves[0].gates}["latency"]
    assert (failed.phase, latency["verdict"], _traffic(repos)) == (
        "rolled_back",
        "fail",
        {"6": 100},
    )
    assert latency["numbers"]["limit_ms"] == pytest.approx(2.0 * 1.5 + 1.0, rel=0.05)


def test_create_refuses_aliases_it_cannot_move(repos: SqlRepositories, clock: Clock) -> None:
    aliases, service = _aliases(repos, clock), _rollouts(repos, clock)
    aliases.set(ALIAS, "digits", {"6": 80, "7": 20}, OPERATOR)
    with pytest.raises(RolloutBlocked, match="is split"):
        service.create(_spec(), OPERATOR)
    aliases.set(ALIAS, "digits", {"7": 100}, OPERATOR)
    with pytest.raises(Conflict, match="already serves 7"):
        service.create(_spec(), OPERATOR)
    aliases.set(ALIAS, "digits", {"6": 100}, OPERATOR)
    with pytest.raises(RolloutBlocked, match="digits 8 has no package"):
        service.create(_spec(version="8"), OPERATOR)
    repos.models.add("other", "", "ml", 1.0)
    repos.versions.add("other", "7", ModelCard("d", "s", "ml"), None, 1.0)
    repos.versions.set_stage("other", "7", "registered", "compiled", 1.0)
    with pytest.raises(InvalidInput, match="serves model 'digits', not 'other'"):
        service.create(_spec(model="other", version="7"), OPERATOR)
    first = service.create(_spec(), OPERATOR)
    with pytest.raises(Conflict, match=f"rollout {first.id} is already moving"):
        service.create(_spec(), OPERATOR)
