"""Deployments through the API: per-profile packages, all or nothing, audited."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from api_support import Api, make_api, seed, seed_deployable

from control_plane.services.tokens import hash_secret
from control_plane.store.records import NewDevice, Package


@pytest.fixture
def api(tmp_path: Path) -> Api:
    api = make_api(tmp_path)
    seed(api)
    seed_deployable(api)
    return api


def deploy(api: Api, **body: object) -> Any:
    return api.call("POST", "/api/v1/deployments", "operator", json=body)


def test_a_selector_deploy_sends_each_device_its_package(api: Api) -> None:
    api.repos.devices.add(
        NewDevice("pi-1", hash_secret("s"), labels={"site": "lab"}, profile_id="raspberry-pi-4"),
        at=5.0,
    )
    refused = deploy(api, model="digits", version="9", selector={"site": "lab"})
    assert refused.status_code == 409
    assert "raspberry-pi-4 (devices pi-1)" in refused.json["detail"]
    assert api.repos.commands.pending() == []  # nothing sent
    pi_sha = hashlib.sha256(b"pi package").hexdigest()
    api.repos.packages.put(
        Package(pi_sha, "digits-9-pi", "digits", "9", "raspberry-pi-4", 1, 3, "/x", {}, 6.0)
    )
    done = deploy(api, model="digits", version="9", selector={"site": "lab"})
    assert done.status_code == 202
    sent = {c["device_id"]: c["sha256"] for c in done.json["commands"]}
    assert sent == {"cam-2": api.seeded["package9"], "pi-1": pi_sha}
    pending = {c.device_id: c.body for c in api.repos.commands.pending()}
    assert pending["pi-1"] == {"sha256": pi_sha, "package_id": "digits-9-pi", "size_bytes": 3}
    entry = api.call("GET", "/api/v1/audit?action=deployment.create").json["items"][0]
    assert entry["actor"] == "operator-token" and set(entry["after"]) == {"cam-2", "pi-1"}


def test_an_alias_deploys_the_version_it_points_at(api: Api) -> None:
    api.call("PUT", "/api/v1/models/digits/aliases/canary", json={"version": "9"})
    done = deploy(api, model="digits", version="canary", device_id="cam-2")
    assert done.json["version"] == "9"


def test_refusals_name_the_reason(api: Api) -> None:
    registered = deploy(api, model="digits", version="1", device_id="cam-2")
    assert "is registered" in registered.json["detail"]
    both = deploy(api, model="digits", version="9", device_id="cam-2", selector={"a": "b"})
    assert both.status_code == 400
    nobody = deploy(api, model="digits", version="9", selector={"site": "moon"})
    assert "no active device" in nobody.json["detail"]
    api.repos.devices.revoke("cam-2", at=9.0)
    revoked = deploy(api, model="digits", version="9", device_id="cam-2")
    assert revoked.status_code == 409 and "revoked" in revoked.json["detail"]
    ghost = deploy(api, model="digits", version="nope", device_id="cam-2")
    assert ghost.status_code == 404
