"""The pure rules of function aliases: names, splits, and the split a rollout action asks for."""

from __future__ import annotations

import pytest

from control_plane.core.function_alias import (
    check_alias_name,
    function_of,
    normalize_routes,
    primary_version,
    traffic_split,
)
from control_plane.errors import InvalidInput


def test_names_are_function_colon_alias() -> None:
    assert function_of("fraud-scorer:live") == "fraud-scorer"
    for bad in ("live", "fraud-scorer:", ":live", "a:Live", "a:b:c", "-x:live"):
        with pytest.raises(InvalidInput, match="expected FUNCTION:ALIAS"):
            check_alias_name(bad)


def test_splits_sum_to_100_drop_zeros_and_order_the_primary_first() -> None:
    assert list(normalize_routes({"7": 10, "6": 90, "5": 0}).items()) == [("6", 90), ("7", 10)]
    assert primary_version({"7": 50, "6": 50}) == "6"  # a tie goes to the smaller name
    for routes, message in [
        ({}, "at least one version"),
        ({"7": 60, "8": 30}, "sum to 90"),
        ({"7": 100.0}, "not a whole percent"),
        ({"7": True}, "not a whole percent"),
        ({"bad version": 100}, "version 'bad version'"),
        ({str(v): 10 for v in range(10)}, "at most 8"),
    ]:
        with pytest.raises(InvalidInput, match=message):
            normalize_routes(routes)  # type: ignore[arg-type]


def test_the_split_of_a_traffic_step_and_of_a_rollback() -> None:
    assert traffic_split("8", 5, "7") == {"7": 95, "8": 5}
    assert traffic_split("8", 100, "7") == {"8": 100}
    assert traffic_split("8", 0, "7") == {"7": 100}  # the rollback: all back to the previous
    assert traffic_split("8", 100, None) == {"8": 100}
    with pytest.raises(InvalidInput, match="needs a previous version"):
        traffic_split("8", 40, None)
