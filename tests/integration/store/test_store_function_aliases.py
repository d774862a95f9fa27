"""Function aliases (split, telemetry device, revision compare-and-set), both backends."""

from __future__ import annotations

import pytest
from store_support import OpenStore

from control_plane.errors import NotFound
from control_plane.store.records import ModelCard
from control_plane.store.repos import RevisionConflict
from control_plane.store.sql.store import SqlRepositories

pytestmark = pytest.mark.integration


def _catalog(repos: SqlRepositories) -> None:
    repos.models.add("digits", "", "ml", 1.0)
    for version in ("6", "7"):
        repos.versions.add("digits", version, ModelCard("d", "s", "ml"), None, 1.0)


def test_put_get_list_and_compare_and_set(open_store: OpenStore) -> None:
    first, second = open_store(), open_store()  # two replicas on one database
    _catalog(first)
    made = first.function_aliases.put("fn:live", "digits", {"6": 100}, "fn", 2.0)
    assert (made.routes, made.telemetry_device, made.revision, made.created_at) == (
        {"6": 100},
        "fn",
        1,
        2.0,
    )
    moved = second.function_aliases.put(
        "fn:live", "digits", {"7": 10, "6": 90}, "fn", 3.0, expected_revision=1
    )
    assert (list(moved.routes.items()), moved.revision) == ([("6", 90), ("7", 10)], 2)
    with pytest.raises(RevisionConflict, match="revision 2"):
        first.function_aliases.put("fn:live", "digits", {"6": 100}, "fn", 4.0, expected_revision=1)
    with pytest.raises(RevisionConflict, match="revision 2"):  # 0: must not exist yet
        first.function_aliases.put("fn:live", "digits", {"6": 100}, "fn", 4.0, expected_revision=0)
    assert first.function_aliases.get("fn:live") == moved
    with pytest.raises(NotFound, match="no version '8'"):
        first.function_aliases.put("fn:canary", "digits", {"8": 100}, "fn", 5.0)
    assert first.function_aliases.find("fn:canary") is None
    with pytest.raises(NotFound, match="'fn:canary' does not exist"):
        first.function_aliases.get("fn:canary")
    first.function_aliases.put("a:live", "digits", {"7": 100}, "a", 6.0)
    page = second.function_aliases.list(model="digits", limit=1)
    assert [a.name for a in page.items] == ["a:live"] and page.next_offset == 1
    assert [a.name for a in second.function_aliases.list(offset=1).items] == ["fn:live"]
    assert second.function_aliases.list(model="other").items == []
