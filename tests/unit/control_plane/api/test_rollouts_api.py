"""``/api/v1/rollouts`` over a real store: the view, the errors that name what is wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from api_support import Api, make_api, seed, seed_deployable

from control_plane.store.records import NewDevice

TARGET = {"kind": "devices", "selector": {"site": "lab"}}


@pytest.fixture
def api(tmp_path: Path) -> Api:
    api = make_api(tmp_path)
    seed(api)
    seed_deployable(api)
    return api


def _spec(**over: Any) -> dict[str, Any]:
    return {"model": "digits", "version": "9", "target": TARGET, "waves": [{"count": 1}], **over}


def test_create_then_read_waves_devices_and_commands(api: Api) -> None:
    made = api.call("POST", "/api/v1/rollouts", "operator", json=_spec())
    assert made.status_code == 201, made.json
    rollout_id = made.json["summary"]["id"]
    got = api.call("GET", f"/api/v1/rollouts/{rollout_id}", "viewer").json
    assert got["summary"]["phase"] == "running"
    assert got["waves"][0]["status"] == "deploying"
    installing = [d for d, s in got["devices"].items() if s["status"] == "installing"]
    assert len(installing) == 1 and got["devices"][installing[0]]["attempts"] == 1
    [command] = api.repos.commands.pending(installing[0])
    assert command.body["rollout"] == rollout_id and command.kind == "deploy"
    listed = api.call("GET", "/api/v1/rollouts?phase=running", "viewer").json
    assert [r["id"] for r in listed["items"]] == [rollout_id]
    paused = api.call("POST", f"/api/v1/rollouts/{rollout_id}/pause", "operator", json={})
    assert paused.json["summary"]["phase"] == "paused"
    again = api.call("POST", f"/api/v1/rollouts/{rollout_id}/pause", "operator", json={})
    assert again.status_code == 409 and again.mimetype == "application/problem+json"
    assert "paused" in again.json["detail"]


def test_a_bad_spec_is_a_400_naming_the_field(api: Api) -> None:
    answer = api.call("POST", "/api/v1/rollouts", "operator", json=_spec(waves=[{"percent": 200}]))
    assert answer.status_code == 400
    assert "waves.0.percent" in answer.json["detail"]


def test_a_profile_without_a_package_is_a_409_naming_it(api: Api) -> None:
    api.repos.devices.add(NewDevice("pi-1", "h", labels={"site": "lab"}, profile_id="rpi4"), 5.0)
    answer = api.call("POST", "/api/v1/rollouts", "operator", json=_spec())
    assert answer.status_code == 409
    assert "no package for profile rpi4 (1 device)" in answer.json["detail"]
    assert api.call("GET", "/api/v1/rollouts", "viewer").json["items"] == []


def test_an_unknown_rollout_is_a_404(api: Api) -> None:
    answer = api.call("POST", "/api/v1/rollouts/nope/resume", "operator", json={})
    assert answer.status_code == 404 and "rollout 'nope'" in answer.json["detail"]
