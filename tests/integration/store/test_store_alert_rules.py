"""Stored alert rules (put, find, list, delete), both backends."""

from __future__ import annotations

import pytest
from store_support import OpenStore

from control_plane.core.alerts import AlertRule
from control_plane.errors import NotFound

pytestmark = pytest.mark.integration

MATCH = (("model", "digits"),)


def test_put_replaces_keeps_created_at_and_lists_by_model_and_name(open_store: OpenStore) -> None:
    first, second = open_store(), open_store()  # two replicas on one database
    rule = AlertRule("error_rate", "error_rate", 0.01, ">", 900.0, 0.0, "critical", MATCH,
                     gates_rollout=True)  # fmt: skip
    made = first.alert_rules.put("digits", rule, True, "ops", 10.0)
    assert (made.model, made.rule, made.enabled, made.updated_by) == ("digits", rule, True, "ops")
    assert (made.created_at, made.updated_at) == (10.0, 10.0)

    off = AlertRule("error_rate", "error_rate", 0.02, ">=", 60.0, 30.0, "info", MATCH,
                    retrain=True)  # fmt: skip
    moved = second.alert_rules.put("digits", off, False, "admin", 20.0)
    assert (moved.rule, moved.enabled, moved.updated_by) == (off, False, "admin")
    assert (moved.created_at, moved.updated_at) == (10.0, 20.0)
    assert first.alert_rules.find("digits", "error_rate") == moved

    floor = AlertRule("accuracy_floor", "accuracy", 0.9, "<", match=(("model", "kws"),))
    first.alert_rules.put("kws", floor, True, "ops", 30.0)
    first.alert_rules.put("digits", AlertRule("a_rule", "drift_share", 0.3, match=MATCH), True,
                          "ops", 40.0)  # fmt: skip
    assert [(s.model, s.rule.name) for s in second.alert_rules.list()] == [
        ("digits", "a_rule"),
        ("digits", "error_rate"),
        ("kws", "accuracy_floor"),
    ]
    assert [s.rule.name for s in second.alert_rules.list("kws")] == ["accuracy_floor"]
    assert second.alert_rules.list("other") == []
    assert second.alert_rules.find("kws", "error_rate") is None  # per model

    removed = second.alert_rules.delete("digits", "error_rate")
    assert removed == moved and first.alert_rules.find("digits", "error_rate") is None
    with pytest.raises(NotFound, match="'digits' has no stored alert rule 'error_rate'"):
        first.alert_rules.delete("digits", "error_rate")
