"""core/alert_rules: the defaults overlaid by stored rules, and rules built from an operator's
fields (left-out fields from the default of the same name; bad fields named)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from control_plane.core.alert_rules import (
    METRICS,
    active_rules,
    build_rule,
    effective_rules,
)
from control_plane.core.alerts import AlertRule, default_rules
from control_plane.errors import InvalidInput
from control_plane.services.alerts import EVALUATED_METRICS

DEFAULTS = default_rules("digits")
BY_NAME = {r.name: r for r in DEFAULTS}


def test_every_default_rule_watches_a_metric_the_evaluation_reads() -> None:
    assert {r.metric for r in DEFAULTS} <= set(METRICS) == set(EVALUATED_METRICS)


def test_stored_rules_replace_disable_and_add() -> None:
    lower = replace(BY_NAME["error_rate"], threshold=0.01)
    floor = AlertRule("accuracy_floor", "accuracy", 0.9, "<", match=(("model", "digits"),))
    settings = effective_rules(
        DEFAULTS, [(floor, True), (lower, True), (BY_NAME["silent_devices"], False)]
    )
    assert [s.rule.name for s in settings] == [*BY_NAME, "accuracy_floor"]
    by_name = {s.rule.name: s for s in settings}
    assert by_name["error_rate"].rule.threshold == 0.01
    assert (by_name["error_rate"].source, by_name["error_rate"].overrides_default) == (
        "stored",
        True,
    )
    assert by_name["error_rate"].default == BY_NAME["error_rate"]
    assert by_name["feature_drift"].source == "default" and by_name["feature_drift"].enabled
    assert by_name["accuracy_floor"].default is None
    assert not by_name["accuracy_floor"].overrides_default
    active = active_rules(settings)
    assert "silent_devices" not in {r.name for r in active}
    assert {r.name for r in active} == set(BY_NAME) - {"silent_devices"} | {"accuracy_floor"}
    assert active_rules(effective_rules(DEFAULTS, [])) == DEFAULTS


def test_a_left_out_field_comes_from_the_default_of_the_same_name() -> None:
    built = build_rule("digits", "accuracy_drop", {"threshold": 0.02}, BY_NAME["accuracy_drop"])
    assert built == replace(BY_NAME["accuracy_drop"], threshold=0.02)
    assert built.retrain and built.gates_rollout and built.window_s == 5400.0
    new = build_rule("digits", "floor", {"metric": "accuracy", "threshold": 0.9,
                                         "comparison": "<"}, None)  # fmt: skip
    assert new == AlertRule("floor", "accuracy", 0.9, "<", match=(("model", "digits"),))


@pytest.mark.parametrize(
    ("name", "given", "message"),
    [
        ("floor", {"threshold": 0.9}, "metric is required"),
        ("floor", {"metric": "accuracy"}, "threshold is required"),
        ("floor", {"metric": "cpu", "threshold": 1}, "metric 'cpu' is not read"),
        ("floor", {"metric": "accuracy", "threshold": float("nan")}, "threshold must be a finite"),
        ("floor", {"metric": "accuracy", "threshold": "0.9"}, "threshold: expected a number"),
        ("floor", {"metric": "accuracy", "threshold": 1, "window_s": 0}, "window_s 0.0"),
        ("floor", {"metric": "accuracy", "threshold": 1, "for_s": -1}, "for_s -1.0"),
        ("floor", {"metric": "accuracy", "threshold": 1, "comparison": "=="}, "comparison '=='"),
        ("floor", {"metric": "accuracy", "threshold": 1, "severity": "page"}, "severity 'page'"),
        ("floor", {"metric": "accuracy", "threshold": 1, "retrain": 1}, "retrain: expected true"),
        ("floor", {"metric": "accuracy", "threshold": 1, "match": []}, "unknown field(s) match"),
        ("Floor!", {"metric": "accuracy", "threshold": 1}, "alert rule name 'Floor!'"),
    ],
)
def test_bad_fields_are_named(name: str, given: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_rule("digits", name, given, None)
