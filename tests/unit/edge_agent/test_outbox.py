"""The SQLite outbox: order, acks, restarts, quota with drop-oldest, dedupe, sequences."""

from __future__ import annotations

from pathlib import Path

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
