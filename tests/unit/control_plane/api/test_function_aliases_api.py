"""``/api/v1/functions/aliases`` and alias-target rollouts over the API: views and errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from api_support import Api, make_api, seed, seed_deployable

URL = "/api/v1/functions/aliases/scorer:live"


@pytest.fixture
def api(tmp_path: Path) -> Api:
    api = make_api(tmp_path)
    seed(api)
    seed_deployable(api)
    return api


def test_put_then_get_shows_the_split_and_the_packages_per_version(api: Api) -> None:
    made = api.call("PUT", URL, "operator", json={"model": "digits", "version": "1"})
    assert made.status_code == 200, made.json
    assert (made.json["routes"], made.json["version"], made.json["revision"]) == (
        {"1": 100},
        "1",
        1,
    )
    assert made.json["telemetry_device"] == "scorer" and made.json["rollout"] is None
    got = api.call("GET", URL, "viewer").json
    assert set(got["packages"]["1"]) == {"x86-64-generic"}
    listed = api.call("GET", "/api/v1/functions/aliases?model=digits", "viewer").json
    assert [a["name"] for a in listed["items"]] == ["scorer:live"]
    entry = api.context.audit.list(action="function_alias.set").items[0]
    assert entry.actor == "operator-token" and entry.subject == "function-alias:scorer:live"


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"model": "digits", "routes": {"1": 90, "2": 5}}, 400, "sum to 95"),
        ({"model": "digits"}, 400, "exactly one of routes"),
        ({"model": "digits", "version": "77"}, 404, "no version '77'"),
        ({"model": "digits", "routes": {"1": 101, "2": -1}}, 400, "not a whole percent"),
    ],
)
def test_bad_sets_name_the_problem(
    api: Api, body: dict[str, object], status: int, detail: str
) -> None:
    answer = api.call("PUT", URL, "operator", json=body)
    assert answer.status_code == status and detail in answer.json["detail"], answer.json
    assert api.call("GET", URL, "viewer").status_code == 404


def test_a_bad_name_is_refused_before_the_service(api: Api) -> None:
    answer = api.call(
        "PUT",
        "/api/v1/functions/aliases/live",
        "operator",
        json={"model": "digits", "version": "1"},
    )
    assert answer.status_code == 422 and "name" in answer.get_data(as_text=True)


def test_an_alias_rollout_over_the_api_moves_the_split(api: Api) -> None:
    api.call("PUT", URL, "operator", json={"model": "digits", "version": "1"})
    spec = {
        "model": "digits",
        "version": "9",
        "target": {"kind": "alias", "alias": "scorer:live"},
        "waves": [{"traffic": 5}, {"traffic": 25}, {"traffic": 100}],
    }
    made = api.call("POST", "/api/v1/rollouts", "operator", json=spec)
    assert made.status_code == 201, made.json
    assert made.json["summary"]["traffic"] == 5 and made.json["summary"]["target"] == "alias"
    got = api.call("GET", URL, "viewer").json
    assert got["routes"] == {"1": 95, "9": 5} and got["rollout"] == made.json["summary"]["id"]
    refused = api.call("PUT", URL, "operator", json={"model": "digits", "version": "1"})
    assert refused.status_code == 409 and "is moving" in refused.json["detail"]
    rolled = api.call(
        "POST", f"/api/v1/rollouts/{got['rollout']}/rollback", "operator", json={"scope": "all"}
    )
    assert rolled.status_code == 200 and api.call("GET", URL, "viewer").json["routes"] == {"1": 100}


def test_the_package_file_downloads_and_a_missing_file_is_named(api: Api, tmp_path: Path) -> None:
    import hashlib

    from control_plane.store.records import Package

    data = b"package bytes"
    (tmp_path / "p.fcpkg").write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    api.repos.packages.put(
        Package(sha, "digits-2-x", "digits", "2", "x", 1, 13, str(tmp_path / "p.fcpkg"), {}, 1.0)
    )
    got = api.call("GET", f"/api/v1/packages/{sha}/file", "viewer")
    assert got.status_code == 200 and got.data == data
    missing = api.repos.packages.list(model_version="9").items[0].sha256  # stored at /nowhere
    answer = api.call("GET", f"/api/v1/packages/{missing}/file", "viewer")
    assert answer.status_code == 404 and "missing on this replica" in answer.json["detail"]
