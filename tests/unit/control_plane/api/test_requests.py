"""Bad requests are answered with problem+json 4xx naming what is wrong, never a 5xx."""

from __future__ import annotations

from pathlib import Path

import pytest
from api_support import Api, make_api, seed

PROBLEM_FIELDS = {"type", "title", "status", "detail", "instance"}


@pytest.fixture
def api(tmp_path: Path) -> Api:
    return make_api(tmp_path, max_json_bytes=4096, max_upload_bytes=64 * 1024)


def assert_problem(answer: object, status: int) -> dict[str, object]:
    assert answer.status_code == status, answer.get_data(as_text=True)  # type: ignore[attr-defined]
    assert answer.mimetype == "application/problem+json"  # type: ignore[attr-defined]
    body: dict[str, object] = answer.json  # type: ignore[attr-defined]
    assert PROBLEM_FIELDS <= set(body)
    assert body["status"] == status
    return body


def test_malformed_json_is_a_400_naming_the_parse_error(api: Api) -> None:
    answer = api.call("POST", "/api/v1/models", data="{name: ", content_type="application/json")
    body = assert_problem(answer, 400)
    assert "not valid JSON" in str(body["detail"])
    assert body["instance"] == "/api/v1/models"


def test_unknown_fields_are_a_422_naming_them(api: Api) -> None:
    answer = api.call("POST", "/api/v1/models", json={"name": "m", "owner": "o", "colour": "red"})
    body = assert_problem(answer, 422)
    assert body["errors"] == [
        {"loc": ["colour"], "msg": "Extra inputs are not permitted", "type": "extra_forbidden"}
    ]


@pytest.mark.parametrize(
    "body",
    [
        {"name": 5, "owner": "o"},
        {"name": "m", "owner": ["o"]},
        {"owner": "o"},
        {"name": "../etc", "owner": "o"},
        [],
        "a string",
    ],
)
def test_wrong_types_and_missing_fields_are_a_422(api: Api, body: object) -> None:
    assert_problem(api.call("POST", "/api/v1/models", json=body), 422)


def test_a_body_that_is_not_json_is_a_422(api: Api) -> None:
    answer = api.call("POST", "/api/v1/models", data="name=m", content_type="text/plain")
    assert_problem(answer, 422)


def test_an_oversized_json_body_is_a_413(api: Api) -> None:
    big = {"name": "m", "owner": "o", "description": "x" * 8000}
    body = assert_problem(api.call("POST", "/api/v1/models", json=big), 413)
    assert "4096" in str(body["detail"])


def test_an_upload_has_its_own_larger_limit(api: Api) -> None:
    assert (
        api.call(
            "POST", "/api/v1/uploads", data=b"x" * 20000, content_type="application/octet-stream"
        ).status_code
        == 201
    )
    answer = api.call(
        "POST", "/api/v1/uploads", data=b"x" * 70000, content_type="application/octet-stream"
    )
    assert "65536" in str(assert_problem(answer, 413)["detail"])


def test_an_empty_upload_is_a_400(api: Api) -> None:
    answer = api.call("POST", "/api/v1/uploads", data=b"", content_type="application/octet-stream")
    assert "empty upload" in str(assert_problem(answer, 400)["detail"])


@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "offset=-1", "limit=ten", "x=1"])
def test_bad_paging_is_a_422(api: Api, query: str) -> None:
    assert_problem(api.call("GET", f"/api/v1/models?{query}"), 422)


def test_unknown_routes_and_methods(api: Api) -> None:
    assert_problem(api.call("GET", "/api/v1/nothing"), 404)
    assert_problem(api.call("PATCH", "/api/v1/models"), 405)


def test_a_missing_model_is_a_404_naming_it(api: Api) -> None:
    body = assert_problem(api.call("GET", "/api/v1/models/ghost"), 404)
    assert "ghost" in str(body["detail"])


@pytest.mark.parametrize(
    "header",
    ["Basic dXNlcjpwYXNz", "Bearer", "Bearer fct_unknown", "Bearer not-a-token"],
)
def test_bad_credentials_are_a_401_with_a_challenge(api: Api, header: str) -> None:
    answer = api.client.get("/api/v1/models", headers={"Authorization": header})
    assert_problem(answer, 401)
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_revoked_token_stops_working_at_once(api: Api) -> None:
    created = api.call("POST", "/api/v1/tokens", json={"name": "ci", "role": "operator"}).json
    headers = {"Authorization": f"Bearer {created['token']}"}
    assert api.client.get("/api/v1/whoami", headers=headers).json == {
        "name": "ci",
        "role": "operator",
    }
    assert api.call("DELETE", f"/api/v1/tokens/{created['id']}").status_code == 200
    body = assert_problem(api.client.get("/api/v1/whoami", headers=headers), 401)
    assert "revoked" in str(body["detail"])
    assert_problem(api.call("DELETE", f"/api/v1/tokens/{created['id']}"), 409)


def test_an_expired_token_is_refused(api: Api) -> None:
    created = api.call(
        "POST", "/api/v1/tokens", json={"name": "short", "role": "viewer", "ttl_seconds": 60}
    ).json
    api.context.tokens.clock = lambda: created["created_at"] + 61
    answer = api.client.get(
        "/api/v1/whoami", headers={"Authorization": f"Bearer {created['token']}"}
    )
    assert "expired" in str(assert_problem(answer, 401)["detail"])


def test_lists_page_with_a_next_link_keeping_the_filters(api: Api) -> None:
    for i in range(5):
        api.call("POST", "/api/v1/models", json={"name": f"m{i}", "owner": "team-a"})
    api.call("POST", "/api/v1/models", json={"name": "other", "owner": "team-b"})
    first = api.call("GET", "/api/v1/models?owner=team-a&limit=2").json
    assert [m["name"] for m in first["items"]] == ["m0", "m1"]
    assert first["next"] == "/api/v1/models?owner=team-a&limit=2&offset=2"
    names = [m["name"] for m in first["items"]]
    url = first["next"]
    while url:
        page = api.call("GET", url).json
        names += [m["name"] for m in page["items"]]
        url = page["next"]
    assert names == [f"m{i}" for i in range(5)]


def test_readyz_says_503_when_the_store_is_gone(api: Api) -> None:
    seed(api)
    api.repos.close()
    answer = api.client.get("/readyz")
    assert_problem(answer, 503)


def test_devices_list_filters_by_selector_and_never_shows_the_credential(api: Api) -> None:
    from control_plane.store.records import NewDevice

    api.repos.devices.add(NewDevice("cam-2", "h2", labels={"site": "lab"}), at=2.0)
    api.repos.devices.add(NewDevice("cam-3", "h3", labels={"site": "shop"}), at=3.0)
    lab = api.call("GET", "/api/v1/devices?selector=site=lab", "viewer").json["items"]
    assert [d["id"] for d in lab] == ["cam-2"]
    assert "token_hash" not in lab[0]
    assert_problem(api.call("GET", "/api/v1/devices?selector=site", "viewer"), 400)
    assert_problem(api.call("GET", "/api/v1/devices/ghost", "viewer"), 404)


def test_metrics_count_answers_by_route_template_and_status(api: Api) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    api.call("GET", "/api/v1/models/ghost")
    api.call("GET", "/api/v1/models/ghost2")
    api.client.get("/api/v1/models")  # no token
    answer = api.client.get("/metrics")
    assert answer.status_code == 200 and answer.mimetype == "text/plain"
    samples = {
        (s.name, s.labels.get("route"), s.labels.get("status")): s.value
        for family in text_string_to_metric_families(answer.get_data(as_text=True))
        for s in family.samples
    }
    assert samples[("fleetcast_api_requests_total", "/api/v1/models/<model>", "404")] == 2
    assert samples[("fleetcast_api_requests_total", "/api/v1/models", "401")] == 1
    assert samples[("fleetcast_api_request_seconds_count", "/api/v1/models/<model>", None)] == 2
