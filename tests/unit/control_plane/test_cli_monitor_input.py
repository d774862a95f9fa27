"""``fleetcast monitor``: reading feedback files, times and groups, and the accuracy table's
join of measured and estimated buckets (the commands against a served API:
tests/integration/test_cli_monitor.py)."""

from __future__ import annotations

import datetime

import click
import pytest

from control_plane.cli_monitor import check_group
from control_plane.cli_monitor_feedback import parse_feedback, parse_pairs
from control_plane.cli_monitor_render import accuracy_rows, features_cell, group_rows
from control_plane.cli_monitor_time import parse_when
from control_plane.errors import InvalidInput


def test_csv_with_or_without_header_and_json_lines_read_the_same_labels() -> None:
    expected = [("p-1", 3.0), ("p,2", 0.5)]
    assert parse_feedback('prediction_id,label\np-1,3\n\n"p,2", 0.5\n', "f.csv") == expected
    assert parse_feedback('p-1,3\r\n"p,2",0.5', "f.csv") == expected
    lines = '{"prediction_id": "p-1", "label": 3}\n\n{"label": 0.5, "prediction_id": "p,2"}\n'
    assert parse_feedback(lines, "f.jsonl") == expected
    items = '[{"prediction_id": "p-1", "label": 3},\n {"prediction_id": "p,2", "label": 0.5}]'
    assert parse_feedback(items, "f.json") == expected
    assert parse_feedback(f'{{"labels": {items}}}', "body.json") == expected  # the API's body


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("p-1,3\np-2,three\n", "f line 2: label 'three' is not a number"),
        ("p-1,3,x\n", "f line 1: expected prediction_id,label, got 3 cells"),
        ("p-1\n", "f line 1: expected prediction_id,label, got 1 cell"),
        (" ,3\n", "f line 1: empty prediction id"),
        ("p-1,nan\n", "f line 1: label 'nan' is not a finite number"),
        (f"{'x' * 129},1\n", "longer than 128 characters"),
        ("prediction_id,label\n", "f: no labels"),
        ("", "f: no labels"),
        ('{"prediction_id": "p", "label": 1}\n{"prediction_id": "q"\n', "f line 2: not JSON"),
        ('{"prediction_id": "p"}\n', "f line 1: missing label"),
        ('{"prediction_id": "p", "label": 1, "at": 5}', "f line 1: unexpected field at"),
        ('{"prediction_id": "p", "label": true}', "f line 1: label True is not a number"),
        ('{"prediction_id": "p", "label": "2"}', "f line 1: label '2' is not a number"),
        ('{"prediction_id": 7, "label": 2}', "f line 1: prediction_id 7 is not a string"),
        ('[{"prediction_id": "p", "label": 1}, 3]', 'f item 2: expected {"prediction_id"'),
        ('[{"prediction_id": "p", "label": 1},', "f: not a JSON array of labels"),
        ("[]", "f: no labels"),
    ],
)
def test_a_bad_line_is_named_with_the_problem(text: str, message: str) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_feedback(text, "f")
    assert message in str(err.value)


def test_label_pairs_split_at_the_last_equals_sign() -> None:
    assert parse_pairs(["a=b=3", "c= 1.5"]) == [("a=b", 3.0), ("c", 1.5)]
    with pytest.raises(click.BadParameter, match="'c': expected PREDICTION_ID=LABEL"):
        parse_pairs(["c"])
    with pytest.raises(click.BadParameter, match="'c=x': label 'x' is not a number"):
        parse_pairs(["c=x"])


def test_times_as_epoch_seconds_iso_8601_or_an_age() -> None:
    now = 1_800_000_000.0
    assert parse_when("1700000000.5", now) == 1_700_000_000.5
    assert parse_when("24h", now) == now - 86400 and parse_when("90s", now) == now - 90
    utc = datetime.datetime(2026, 11, 30, 8, tzinfo=datetime.UTC).timestamp()
    assert parse_when("2026-11-30T08:00Z", now) == utc
    assert parse_when("2026-11-30T08:00", now) == utc  # no offset: UTC
    assert parse_when("2026-11-30T09:00+01:00", now) == utc
    with pytest.raises(ValueError, match="'soon': expected epoch seconds, an ISO 8601 time"):
        parse_when("soon", now)


def test_a_group_must_be_label_equals_value() -> None:
    assert check_group(None, None, "site=berlin") == "site=berlin"
    assert check_group(None, None, "site=") == "site="  # devices whose label is empty
    assert check_group(None, None, None) is None
    for bad in ("site", "=berlin", " =x"):
        with pytest.raises(click.BadParameter, match="expected label=value"):
            check_group(None, None, bad)


def test_accuracy_rows_put_measured_and_estimated_of_one_bucket_side_by_side() -> None:
    measured = [
        {"group": "all", "bucket_start": 3600.0, "count": 10, "accuracy": 0.9, "f1_macro": 0.85}
    ]
    estimated = [  # no "group" key (before per-group estimates): counts as "all"
        {"bucket_start": 0.0, "count": 4, "accuracy": 0.8, "standard_error": 0.05},
        {"bucket_start": 3600.0, "count": 30, "accuracy": 0.91, "standard_error": 0.01},
    ]
    columns, rows = accuracy_rows(measured, estimated, "classification")
    assert columns[2:] == ["measured n", "measured accuracy", "measured F1 macro",
                           "estimated n", "estimated accuracy", "estimated ±"]  # fmt: skip
    assert rows == [
        ["all", "1970-01-01 00:00:00", "0", "-", "-", "4", "0.8000", "0.0500"],
        ["all", "1970-01-01 01:00:00", "10", "0.9000", "0.8500", "30", "0.9100", "0.0100"],
    ]
    by_site = [{**measured[0], "group": "site=berlin"}, {**measured[0], "group": "site=munich"}]
    assert [r[0] for r in accuracy_rows(by_site, None, "classification")[1]] == [
        "site=berlin",
        "site=munich",
    ]
    regression = [{"group": "all", "bucket_start": 0.0, "count": 5, "mae": 1.25}]
    assert accuracy_rows(regression, None, "regression") == (
        ["group", "bucket start", "measured n", "measured MAE"],
        [["all", "1970-01-01 00:00:00", "5", "1.2500"]],
    )


def test_group_summaries_and_drifted_feature_cells() -> None:
    groups = [{"group": "site=berlin", "captures": 40, "labelled": 20, "accuracy": 0.75,
               "f1_macro": 0.7, "estimated_accuracy": 0.8}]  # fmt: skip
    assert group_rows(groups, "classification")[1] == [
        ["site=berlin", "40", "20", "0.7500", "0.7000", "0.8000"]
    ]
    assert group_rows([{"group": "all", "mae": 2.0}], "regression")[1][0][4] == "2.0000"
    names = [f"in/{i}" for i in range(8)]
    assert features_cell(names, 64) == "8/64: in/0, in/1, in/2, in/3, in/4, in/5, … +2"
    assert features_cell([], 64) == "0/64" and features_cell(["a"]) == "1: a"
