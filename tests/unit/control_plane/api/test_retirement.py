"""Retiring a version devices still run: refused naming them, or rolled back with force."""

from __future__ import annotations

from pathlib import Path

from api_support import Api, make_api, seed, seed_deployable

from control_plane.core.installed import active_packages
from control_plane.services.tokens import Principal
from control_plane.store.records import Command

RETIRE = "/api/v1/models/digits/versions/9/stage"


def _fleet(tmp_path: Path) -> Api:
    api = make_api(tmp_path)
    seed(api)
    seed_deployable(api)  # digits 9 compiled for cam-2's profile
    return api


def _ack_ok(api: Api, command_id: str, device: str, package_id: str) -> None:
    api.repos.commands.ack(
        command_id,
        device,
        True,
        {"error": "", "package_id": package_id, "model_name": "digits"},
        9.0,
    )


def test_a_version_a_device_runs_is_refused_naming_it_then_rolled_back_with_force(
    tmp_path: Path,
) -> None:
    api = _fleet(tmp_path)
    sent = api.call("POST", "/api/v1/deployments", "operator",
                    json={"model": "digits", "version": "9", "device_id": "cam-2"})  # fmt: skip
    assert sent.status_code == 202, sent.json
    command_id = sent.json["commands"][0]["command_id"]
    # not acked yet: the device does not run it, nothing to refuse
    assert api.context.catalog.roll_back is not None
    _ack_ok(api, command_id, "cam-2", "digits-9-x86")

    refused = api.call("POST", RETIRE, "operator", json={"stage": "retired"})
    assert refused.status_code == 409, refused.json
    assert refused.json["devices"] == ["cam-2"] and "cam-2" in refused.json["detail"]
    assert api.call("GET", "/api/v1/models/digits/versions/9").json["stage"] == "compiled"

    forced = api.call("POST", RETIRE, "operator", json={"stage": "retired", "force": True})
    assert forced.status_code == 200, forced.json
    assert forced.json["stage"] == "retired"
    (rollback,) = api.repos.commands.list(device_id="cam-2", kind="rollback").items
    assert rollback.body["model_name"] == "digits" and rollback.status == "pending"
    entry = api.context.audit.list(action="version.stage").items[0]
    assert entry.detail["rolled_back"]["commands"] == {"cam-2": rollback.id}
    assert entry.detail["rolled_back"]["devices"] == {"cam-2": "digits-9-x86"}


def test_a_rollout_s_devices_are_rolled_back_by_the_rollout_engine(tmp_path: Path) -> None:
    api = _fleet(tmp_path)
    spec = {
        "model": "digits", "version": "9", "waves": [{"percent": 100}],
        "target": {"kind": "devices", "selector": {"site": "lab"}},
    }  # fmt: skip
    rollout = api.context.rollouts.create(spec, Principal("ops", "operator"))
    (deploy,) = [c for c in api.repos.commands.list(kind="deploy").items if c.body.get("rollout")]
    _ack_ok(api, deploy.id, "cam-2", "digits-9-x86")
    forced = api.call("POST", RETIRE, "operator", json={"stage": "retired", "force": True})
    assert forced.status_code == 200, forced.json
    assert api.context.rollouts.get(rollout.id).phase == "rolled_back"
    (rollback,) = api.repos.commands.list(device_id="cam-2", kind="rollback").items
    assert rollback.body["rollout"] == rollout.id  # sent by the engine, not directly
    entry = api.context.audit.list(action="version.stage").items[0]
    assert entry.detail["rolled_back"]["rollouts"] == [rollout.id]


def test_a_version_no_device_runs_retires_at_once(tmp_path: Path) -> None:
    api = _fleet(tmp_path)
    done = api.call("POST", RETIRE, "operator", json={"stage": "retired"})
    assert done.status_code == 200 and done.json["stage"] == "retired"


def _command(device: str, version: int, kind: str, body: dict, result: dict | None) -> Command:  # type: ignore[type-arg]
    status = "pending" if result is None else ("ok" if result.get("ok", True) else "failed")
    return Command(f"c{version}", device, version, kind, body, status, 1.0, None, result)


def test_what_a_device_runs_is_replayed_from_its_acked_commands() -> None:
    commands = [
        _command("d1", 2, "rollback", {"model_name": "m"}, {"package_id": "m-1"}),
        _command("d1", 1, "deploy", {}, {"package_id": "m-2", "model_name": "m"}),
        _command("d1", 3, "deploy", {}, None),  # not acked: not running
        _command("d2", 1, "deploy", {}, {"package_id": "m-2", "model_name": "m", "ok": False}),
        _command("d2", 2, "deploy", {}, {"package_id": "k-1", "model_name": "k"}),
        _command("d2", 3, "config", {}, {"window_seconds": 5}),
    ]
    assert active_packages(commands) == {("d1", "m"): "m-1", ("d2", "k"): "k-1"}
