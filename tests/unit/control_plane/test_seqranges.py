"""The pruned-seq ranges: received seqs merge, gaps stay, any arrival order."""

from __future__ import annotations

import itertools
import random

import pytest

from control_plane.core.seqranges import covers, merge_ranges


def test_adjacent_seqs_merge_and_a_gap_stays_a_gap() -> None:
    assert merge_ranges([], [3, 1, 2, 6, 7]) == [(1, 3), (6, 7)]
    assert merge_ranges([(1, 3), (6, 7)], [4]) == [(1, 4), (6, 7)]
    assert merge_ranges([(1, 4), (6, 7)], [5]) == [(1, 7)]  # the gap's seq arrived late
    assert merge_ranges([(1, 7)], [3, 7]) == [(1, 7)]  # pruned twice: no change
    assert merge_ranges([(10, 20)], [1, 30]) == [(1, 1), (10, 20), (30, 30)]


def test_function_containers_keep_one_range_per_instance() -> None:
    a, b = 5 << 23, 9 << 23  # two containers' prefixes under one device id
    seqs = [a + n for n in range(1, 50)] + [b + n for n in range(1, 30)]
    random.Random(3).shuffle(seqs)
    assert merge_ranges([], seqs) == [(a + 1, a + 49), (b + 1, b + 29)]


def test_covers_exactly_the_received_seqs() -> None:
    received = random.Random(7).sample(range(1, 400), 250)
    ranges = merge_ranges([], received[:100])
    ranges = merge_ranges(ranges, received[100:])
    assert [s for s in range(0, 402) if covers(ranges, s)] == sorted(received)
    assert all(a[1] + 1 < b[0] for a, b in itertools.pairwise(ranges))  # disjoint, apart


def test_a_reversed_range_is_refused() -> None:
    with pytest.raises(ValueError, match="lo is above hi"):
        merge_ranges([(5, 2)], [])


def test_the_prune_names_every_kind_ingest_stores() -> None:
    from control_plane.services.ingest import UPLOAD_KINDS
    from control_plane.store.sql.retention import KINDS

    assert set(KINDS) == UPLOAD_KINDS  # an upload of a kind left out would never be pruned
