"""Accuracy and attribution readings for the alert rules: none on thin data, drops measured
from the reference accuracy, and the default rules firing on them."""

from __future__ import annotations

from typing import Any

import pytest

from control_plane.core.alerts import (
    AlertBook,
    LabelGuards,
    accuracy_readings,
    attribution_reading,
    default_rules,
    labels_of,
)

LABELS = labels_of({"model": "digits", "version": "3", "group": "all"})


def _summary(**over: Any) -> dict[str, Any]:
    base = {
        "labelled": 250,
        "accuracy": 0.80,
        "recent_captures": 150,
        "estimated_accuracy": 0.93,
        "calibrated": True,
        "reference_accuracy": 0.95,
    }
    return base | over


def test_readings_measure_the_drop_from_the_reference() -> None:
    found = {r.metric: r.value for r in accuracy_readings(_summary(), LabelGuards(), LABELS, 9.0)}
    assert found == pytest.approx(
        {"accuracy": 0.80, "accuracy_drop": 0.15, "estimated_accuracy": 0.93,
         "estimated_accuracy_drop": 0.02}
    )  # fmt: skip


@pytest.mark.parametrize(
    ("over", "metrics"),
    [
        ({"labelled": 199}, {"estimated_accuracy", "estimated_accuracy_drop"}),
        ({"recent_captures": 99}, {"accuracy", "accuracy_drop"}),
        ({"calibrated": False, "reference_accuracy": None}, {"accuracy"}),  # no reference
        ({"accuracy": None, "labelled": 0, "estimated_accuracy": None}, set()),
    ],
)
def test_thin_or_unreferenced_data_gives_no_reading(
    over: dict[str, Any], metrics: set[str]
) -> None:
    readings = accuracy_readings(_summary(**over), LabelGuards(), LABELS, 9.0)
    assert {r.metric for r in readings} == metrics


def test_the_default_rules_fire_on_a_measured_drop_and_not_on_a_small_estimated_one() -> None:
    book = AlertBook(default_rules("digits"))
    transitions = book.evaluate(accuracy_readings(_summary(), LabelGuards(), LABELS, 100.0), 100.0)
    firing = {t.alert.rule.name for t in transitions if t.alert.state == "firing"}
    assert firing == {"accuracy_drop"}
    (alert,) = book.blocks_rollout("digits", "3")
    assert alert.rule.retrain and alert.value == pytest.approx(0.15)


def test_attribution_readings_skip_insufficient_windows() -> None:
    reading = attribution_reading({"status": "drift", "top_k_overlap": 1 / 3}, LABELS, 5.0)
    assert reading is not None and reading.metric == "attribution_top_k_overlap"
    assert reading.value == pytest.approx(1 / 3)
    assert (
        attribution_reading({"status": "insufficient", "top_k_overlap": None}, LABELS, 5.0) is None
    )
    book = AlertBook(default_rules("digits"))
    book.evaluate([reading], 5.0)
    assert [(a.rule.name, a.state) for a in book.active.values()] == [
        ("attribution_drift", "pending")
    ]
