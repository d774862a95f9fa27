"""Alert lifecycle: pending, firing after for_s, resolved, acknowledged; retraining payload."""

from __future__ import annotations

import json

import pytest

from control_plane.core.alerts import (
    AlertBook,
    AlertRule,
    Reading,
    default_rules,
    labels_of,
    retraining_request,
)

SERIES = labels_of({"model": "digits", "version": "2", "group": "eu"})
RULE = AlertRule(
    "drift",
    "drift_share",
    0.5,
    ">=",
    window_s=60,
    for_s=120,
    severity="critical",
    match=(("model", "digits"),),
    retrain=True,
    gates_rollout=True,
)


def _reading(value: float, at: float, labels=SERIES) -> Reading:
    return Reading("drift_share", value, at, labels)


def test_breach_goes_pending_then_fires_after_for_duration_then_resolves():
    book = AlertBook((RULE,))
    (t,) = book.evaluate([_reading(0.6, 0)], now=0)
    assert t.previous is None and t.alert.state == "pending"
    assert book.evaluate([_reading(0.7, 60)], now=60) == []  # still pending: 60 s < for_s
    (t,) = book.evaluate([_reading(0.7, 120)], now=120)
    assert (t.previous, t.alert.state, t.alert.fired_at) == ("pending", "firing", 120)
    assert book.blocks_rollout("digits", "2") == [t.alert]
    assert book.blocks_rollout("digits", "1") == []
    (t,) = book.evaluate([_reading(0.1, 180)], now=180)
    assert (t.previous, t.alert.state, t.alert.resolved_at) == ("firing", "resolved", 180)
    assert book.firing() == [] and book.history == [t.alert]


def test_a_short_breach_never_fires():
    book = AlertBook((RULE,))
    book.evaluate([_reading(0.9, 0)], now=0)
    assert book.evaluate([_reading(0.0, 60)], now=60) == []  # pending dropped silently
    assert book.active == {} and book.history == []


def test_window_mean_and_comparison():
    rule = AlertRule("lat", "p95_ms", 100.0, ">", window_s=60, for_s=0)
    book = AlertBook((rule,))
    readings = [Reading("p95_ms", v, t) for v, t in ((50, 0), (300, 50), (90, 100))]
    transitions = book.evaluate(readings, now=100)  # window (40, 100]: mean(300, 90) = 195
    assert [x.alert.state for x in transitions] == ["pending", "firing"]
    assert transitions[-1].alert.value == pytest.approx(195)


def test_acknowledge_keeps_firing_and_unknown_ids_raise():
    rule = AlertRule("err", "error_rate", 0.05, ">", window_s=60)
    book = AlertBook((rule,))
    book.evaluate([Reading("error_rate", 0.2, 10, SERIES)], now=10)
    (alert,) = book.firing()
    acked = book.acknowledge(alert.id, "ops@example.com")
    assert acked.state == "firing" and acked.acknowledged_by == "ops@example.com"
    assert book.evaluate([Reading("error_rate", 0.3, 20, SERIES)], now=20) == []
    with pytest.raises(KeyError):
        book.acknowledge("nope", "x")


def test_rules_only_match_their_model_and_silence_resolves():
    book = AlertBook((RULE,))
    other = labels_of({"model": "other", "version": "1"})
    assert book.evaluate([_reading(0.9, 0, other)], now=0) == []
    book.evaluate([_reading(0.9, 0)], now=0)
    book.evaluate([_reading(0.9, 130)], now=130)
    (t,) = book.evaluate([], now=300)  # no readings in the window any more
    assert t.alert.state == "resolved"


def test_default_rules_and_retraining_request_payload():
    rules = default_rules("digits")
    assert {r.name for r in rules} >= {
        "feature_drift",
        "dataset_drift",
        "error_rate",
        "accuracy_drop",
    }
    assert all(r.applies_to(SERIES) for r in rules)
    book = AlertBook(rules)
    book.evaluate([Reading("accuracy_drop", 0.12, 0, SERIES)], now=0)
    (alert,) = book.firing()
    assert alert.rule.retrain
    body = retraining_request(
        alert,
        evidence={"measured_accuracy": 0.81, "reference_accuracy": 0.93},
        samples={"captures": "/api/v1/captures?model=digits&version=2&group=eu", "count": 412},
    )
    assert (body["model"], body["version"], body["group"]) == ("digits", "2", "eu")
    assert body["alert"]["rule"] == "accuracy_drop" and body["samples"]["count"] == 412
    json.dumps(body)  # JSON-able as it is
