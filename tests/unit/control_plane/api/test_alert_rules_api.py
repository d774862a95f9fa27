"""``/api/v1/alert-rules``: effective rules with their source, set/delete with roles and audit,
bad input refused naming the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from api_support import Api, make_api, seed

from control_plane.core.alerts import default_rules

RULES = "/api/v1/alert-rules"


@pytest.fixture
def api(tmp_path: Path) -> Api:
    api = make_api(tmp_path)
    seed(api)  # the model digits
    return api


def _rules(api: Api, who: str = "viewer") -> dict[str, dict[str, Any]]:
    answer = api.call("GET", f"{RULES}?model=digits", who)
    assert answer.status_code == 200, answer.json
    return {r["name"]: r for r in answer.json["items"]}


def test_the_defaults_are_listed_with_their_source(api: Api) -> None:
    rules = _rules(api)
    assert list(rules) == [r.name for r in default_rules("digits")]
    error_rate = rules["error_rate"]
    assert (error_rate["source"], error_rate["enabled"], error_rate["overrides_default"]) == (
        "default",
        True,
        False,
    )
    assert (error_rate["metric"], error_rate["threshold"], error_rate["comparison"]) == (
        "error_rate",
        0.05,
        ">",
    )
    assert error_rate["updated_by"] is None and error_rate["default"] is None
    unknown = api.call("GET", f"{RULES}?model=nope", "viewer")
    assert unknown.status_code == 404 and "nope" in unknown.json["detail"]


def test_override_add_disable_delete_round_trip_is_audited(api: Api) -> None:
    # an override of one field keeps the default's other fields
    put = api.call("PUT", f"{RULES}/digits/error_rate", "operator", json={"threshold": 0.01})
    assert put.status_code == 200, put.json
    assert (put.json["threshold"], put.json["source"], put.json["overrides_default"]) == (
        0.01,
        "stored",
        True,
    )
    assert (put.json["for_s"], put.json["severity"], put.json["gates_rollout"]) == (
        300.0,
        "critical",
        True,
    )
    assert put.json["default"]["threshold"] == 0.05 and put.json["updated_by"] == "operator-token"
    # a new rule, by the admin
    floor = {"metric": "accuracy", "threshold": 0.9, "comparison": "<", "severity": "info"}
    added = api.call("PUT", f"{RULES}/digits/accuracy_floor", "admin", json=floor)
    assert added.status_code == 200, added.json
    assert (added.json["source"], added.json["default"], added.json["window_s"]) == (
        "stored",
        None,
        300.0,
    )
    # a default disabled
    off = api.call("PUT", f"{RULES}/digits/silent_devices", "operator", json={"enabled": False})
    assert off.status_code == 200 and off.json["enabled"] is False
    rules = _rules(api)
    assert rules["error_rate"]["threshold"] == 0.01
    assert rules["accuracy_floor"]["metric"] == "accuracy"
    assert rules["silent_devices"]["enabled"] is False
    assert list(rules)[-1] == "accuracy_floor"  # added rules after the defaults

    entries = api.context.audit.list(action="alert_rule.set").items
    by_subject = {e.subject: e for e in entries}
    first = by_subject["alert-rule:digits/error_rate"]
    assert first.actor == "operator-token" and first.before is None
    assert first.after is not None and first.after["threshold"] == 0.01
    assert by_subject["alert-rule:digits/accuracy_floor"].actor == "admin-token"

    # delete: back to the default, or gone
    back = api.call("DELETE", f"{RULES}/digits/error_rate", "operator")
    assert back.status_code == 200, back.json
    assert back.json["removed"]["threshold"] == 0.01
    assert back.json["effective"]["source"] == "default"
    assert back.json["effective"]["threshold"] == 0.05
    gone = api.call("DELETE", f"{RULES}/digits/accuracy_floor", "operator")
    assert gone.status_code == 200 and gone.json["effective"] is None
    assert "accuracy_floor" not in _rules(api)
    again = api.call("DELETE", f"{RULES}/digits/accuracy_floor", "operator")
    assert again.status_code == 404 and "accuracy_floor" in again.json["detail"]
    (deleted, _) = api.context.audit.list(action="alert_rule.delete").items
    assert deleted.subject == "alert-rule:digits/accuracy_floor" and deleted.after is None
    assert deleted.before is not None and deleted.before["metric"] == "accuracy"


def test_a_viewer_cannot_change_rules(api: Api) -> None:
    put = api.call("PUT", f"{RULES}/digits/error_rate", "viewer", json={"threshold": 0.01})
    assert put.status_code == 403 and "operator" in put.json["detail"]
    assert api.call("DELETE", f"{RULES}/digits/error_rate", "viewer").status_code == 403
    assert api.call("GET", f"{RULES}?model=digits", None).status_code == 401
    assert _rules(api)["error_rate"]["source"] == "default"
    assert api.context.audit.list(action="alert_rule.set").items == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"metric": "cpu_load", "threshold": 1}, "metric"),
        ({"metric": "error_rate", "threshold": "high"}, "threshold"),
        ({"metric": "error_rate", "threshold": 1, "comparison": "=="}, "comparison"),
        ({"metric": "error_rate", "threshold": 1, "window_s": 0}, "window_s"),
        ({"metric": "error_rate", "threshold": 1, "window_s": 1e9}, "window_s"),
        ({"metric": "error_rate", "threshold": 1, "for_s": -5}, "for_s"),
        ({"metric": "error_rate", "threshold": 1, "severity": "page"}, "severity"),
        ({"metric": "error_rate", "threshold": 1, "retrain": "maybe"}, "retrain"),
        ({"metric": "error_rate", "threshold": 1, "gates": True}, "gates"),
    ],
)
def test_bad_input_is_a_422_naming_the_field(api: Api, body: dict[str, Any], field: str) -> None:
    answer = api.call("PUT", f"{RULES}/digits/my_rule", "operator", json=body)
    assert answer.status_code == 422, answer.json
    assert field in answer.json["detail"]
    assert [e["loc"][-1] for e in answer.json["errors"]] == [field]
    assert "my_rule" not in _rules(api)


def test_a_non_finite_threshold_is_refused(api: Api) -> None:
    raw = b'{"metric": "error_rate", "threshold": NaN}'
    answer = api.call(
        "PUT", f"{RULES}/digits/my_rule", "operator", data=raw, content_type="application/json"
    )
    assert answer.status_code == 422 and "threshold" in answer.json["detail"], answer.json
    assert "my_rule" not in _rules(api)


@pytest.mark.parametrize(
    ("url", "body", "status", "detail"),
    [
        (f"{RULES}/digits/my_rule", {"threshold": 0.2}, 400, "metric is required"),
        (f"{RULES}/digits/my_rule", {"metric": "error_rate"}, 400, "threshold is required"),
        (f"{RULES}/nope/error_rate", {"threshold": 0.2}, 404, "'nope'"),
        (f"{RULES}/digits/Bad-Name", {"threshold": 0.2}, 422, "rule"),
    ],
)
def test_incomplete_rules_and_unknown_models_are_refused(
    api: Api, url: str, body: dict[str, Any], status: int, detail: str
) -> None:
    answer = api.call("PUT", url, "operator", json=body)
    assert answer.status_code == status and detail in answer.json["detail"], answer.json
