"""The SQLite outbox: order, acks, restarts, quota with drop-oldest, dedupe, sequences."""

from __future__ import annotations

import json
from pathlib import Path

from edge_agent.core.limits import BATCH_BYTES, MAX_MESSAGE_BYTES, encoded_size, fit_window
from edge_agent.outbox import Outbox


def test_messages_survive_a_restart_until_acked(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite")
    ids = [outbox.put("telemetry_window", {"n": i}) for i in range(5)]
    first = outbox.pending(2)
    assert [m.payload["n"] for m in first] == [0, 1]
    outbox.ack([first[0].id])
    outbox.close()

    reopened = Outbox(tmp_path / "outbox.sqlite")
    pending = reopened.pending()
    assert [m.payload["n"] for m in pending] == [1, 2, 3, 4]
    assert pending[0].attempts == 2  # resent: not acknowledged the first time
    reopened.ack([m.id for m in pending])
    assert reopened.pending() == [] and ids[0] is not None
    reopened.close()


def test_quota_drops_the_oldest_and_counts_them(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite", quota_bytes=1000)
    for i in range(30):
        outbox.put("telemetry_window", {"n": i, "pad": "x" * 80})
    stats = outbox.stats()
    assert stats["bytes"] <= 1000
    kept = [m.payload["n"] for m in outbox.pending(100)]
    assert kept == list(range(30 - len(kept), 30))  # the newest, in order
    assert stats["dropped"] == 30 - len(kept) > 0
    outbox.close()
    assert Outbox(tmp_path / "o.sqlite", quota_bytes=1000).dropped == stats["dropped"]


def test_a_message_larger_than_the_quota_is_dropped_and_counted(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite", quota_bytes=100)
    assert outbox.put("telemetry_window", {"pad": "x" * 200}) is None
    assert outbox.dropped == 1 and outbox.pending() == []


def test_dedupe_key_keeps_one_copy(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite")
    assert outbox.put("status", {"event": "installed"}, "install:1:installed") is not None
    assert outbox.put("status", {"event": "installed"}, "install:1:installed") is None
    assert len(outbox.pending()) == 1


def test_sequence_numbers_are_durable(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite")
    assert [outbox.next_sequence() for _ in range(3)] == [1, 2, 3]
    outbox.close()
    assert Outbox(tmp_path / "o.sqlite").next_sequence() == 4


def test_batches_are_bounded_in_bytes_and_status_goes_first(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite")
    big = "x" * (BATCH_BYTES // 3)
    for i in range(5):
        outbox.put("telemetry_window", {"n": i, "pad": big})
    outbox.put("status", {"event": "installed"})
    first = outbox.pending()
    assert first[0].kind == "status"  # a report never waits behind windows
    assert sum(len(json.dumps(m.payload, separators=(",", ":"))) for m in first) <= BATCH_BYTES
    assert [m.payload.get("n") for m in first] == [None, 0, 1]
    outbox.ack([m.id for m in first])
    assert [m.payload["n"] for m in outbox.pending()] == [2, 3, 4][: len(outbox.pending(100))]


def test_a_message_over_the_upload_limit_is_dropped_and_counted(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite")
    assert outbox.put("telemetry_window", {"pad": "x" * MAX_MESSAGE_BYTES}) is None
    assert outbox.dropped == 1 and outbox.pending() == []


def disk_bytes(directory: Path) -> int:
    """What the outbox takes on disk: the database, its WAL and shared-memory files."""
    return sum(p.stat().st_size for p in directory.iterdir())


def test_disk_use_stays_near_the_quota(tmp_path: Path) -> None:
    """A 1 MB quota, 8 MB of windows offline, then a drain: the files stay near 1 MB."""
    quota = 1024 * 1024
    outbox = Outbox(tmp_path / "o.sqlite", quota_bytes=quota)
    pad = "y" * 20_000
    peak = 0
    for i in range(400):
        outbox.put("telemetry_window", {"n": i, "pad": pad})
        peak = max(peak, disk_bytes(tmp_path))
    assert outbox.stats()["bytes"] <= quota and outbox.dropped > 300
    assert peak < 2 * quota, f"offline: {peak} bytes on disk for a {quota}-byte quota"
    while batch := outbox.pending():
        outbox.ack([m.id for m in batch])
    drained = disk_bytes(tmp_path)
    assert drained < quota // 2, f"drained: {drained} bytes left on disk"
    outbox.close()


def test_outbox_files_are_private(tmp_path: Path) -> None:
    import os
    import stat

    old = os.umask(0)
    try:
        outbox = Outbox(tmp_path / "o.sqlite")
        outbox.put("status", {"event": "x"})
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes and set(modes.values()) == {0o600}, modes
    outbox.close()


def test_fit_window_drops_captures_first_and_counts_them() -> None:
    capture = {"prediction_id": "p", "inputs": {"x": [0.123456789] * 4096}, "outputs": {}}
    window = {"sequence": 1, "captures": [capture] * 40, "captures_dropped": 2, "inputs": [1]}
    assert encoded_size(window) > 1024 * 1024
    fitted = fit_window(window, 1024 * 1024)
    assert encoded_size(fitted) <= 1024 * 1024
    kept = len(fitted["captures"])
    assert 0 < kept < 40 and fitted["captures_dropped"] == 2 + 40 - kept
    assert fitted["trimmed"] == ["captures"] and fitted["inputs"] == [1]
    small = {"sequence": 2, "captures": []}
    assert fit_window(small) is small


def test_quota_drops_windows_before_status_reports(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite", quota_bytes=2000)
    outbox.put("status", {"event": "installed"})
    for i in range(30):
        outbox.put("telemetry_window", {"n": i, "pad": "x" * 80})
    kinds = [m.kind for m in outbox.pending(100)]
    assert kinds[0] == "status" and outbox.dropped > 0
