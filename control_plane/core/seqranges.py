"""Sets of sequence numbers kept as closed ranges: what raw-upload retention remembers.

Pruning a raw upload keeps its (device, seq) as received, so a resend is still a
duplicate. Per device the pruned seqs are stored as ranges ``[lo, hi]`` of seqs all
received; a seq never received (dropped by the device's outbox quota, a status report
de-duplicated on the device, another function container's counter) is never inside a
range, however the seqs arrived. Agents number 1, 2, 3 ... and send nearly in order, so a
device has one range plus one per gap; a function container (``instance << 23 | n``) has
its own.
"""

from __future__ import annotations

from collections.abc import Iterable

Range = tuple[int, int]


def merge_ranges(ranges: Iterable[Range], seqs: Iterable[int]) -> list[Range]:
    """``ranges`` with ``seqs`` added, as the fewest sorted, disjoint, non-adjacent ranges."""
    spans = sorted([*ranges, *((s, s) for s in seqs)])
    merged: list[Range] = []
    for lo, hi in spans:
        if lo > hi:
            raise ValueError(f"range [{lo}, {hi}]: lo is above hi")
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def covers(ranges: Iterable[Range], seq: int) -> bool:
    """Whether ``seq`` lies in one of ``ranges``."""
    return any(lo <= seq <= hi for lo, hi in ranges)
