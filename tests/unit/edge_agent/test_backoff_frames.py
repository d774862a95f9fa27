from __future__ import annotations

import random

import pytest

from edge_agent.core.backoff import Backoff
from edge_agent.core.frames import FrameError, decode_block, encode_block


def test_backoff_grows_to_its_cap_with_jitter_and_resets() -> None:
    backoff = Backoff(base=0.5, cap=8.0, rng=random.Random(7))
    delays = [backoff.next() for _ in range(12)]
    ceilings = [min(8.0, 0.5 * 2**i) for i in range(12)]
    assert all(0.25 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert max(delays) <= 8.0 and max(delays[6:]) > 2.0  # it does grow
    assert len({round(d, 6) for d in delays[6:]}) == 6  # jittered, not in step
    backoff.reset()
    assert backoff.next() <= 0.5


def test_two_devices_do_not_retry_in_step() -> None:
    a, b = Backoff(rng=random.Random(1)), Backoff(rng=random.Random(2))
    assert [round(a.next(), 3) for _ in range(5)] != [round(b.next(), 3) for _ in range(5)]


def test_block_frames_round_trip_and_reject_garbage() -> None:
    header = {"sha256": "ab" * 32, "offset": 512, "total_size": 1024, "last": True}
    assert decode_block(encode_block(header, b"\x00\x01payload")) == (header, b"\x00\x01payload")
    with pytest.raises(FrameError, match="shorter than its length prefix"):
        decode_block(b"\x00")
    with pytest.raises(FrameError, match="does not fit"):
        decode_block(b"\x00\x00\x10\x00{}")
    with pytest.raises(FrameError, match="not JSON"):
        decode_block(b"\x00\x00\x00\x02{x")
    with pytest.raises(FrameError, match="not a JSON object"):
        decode_block(b"\x00\x00\x00\x02[]")
