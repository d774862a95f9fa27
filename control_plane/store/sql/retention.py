"""Pruning of raw uploads and captures (the windows' downsampling is in ``monitoring``).

Raw uploads: the rows received before a cutoff are deleted and their (device, seq) added
to ``upload_pruned`` as ranges of received seqs (:mod:`control_plane.core.seqranges`), in
the same transaction. The ``uploads_not_pruned`` trigger (migration 0009) skips an INSERT
of a (device, seq) inside a pruned range, so the ingest path, unchanged, answers a resend
of a pruned upload as a duplicate (acked, not stored, its window not indexed again).

Captures: the rows predicted before a cutoff go with their per-prediction explanations and
with the feedback label of their prediction id once no capture of it is left; labels that
never matched a capture go when they are older than the cutoff.
"""

from __future__ import annotations

from collections.abc import Sequence

from control_plane.core.seqranges import Range, merge_ranges
from control_plane.store.sql.base import Database, Tx

CHUNK = 500  # ids per IN (...) list
KINDS = ("status", "telemetry_window")
"""Every kind ingest stores (``services/ingest.UPLOAD_KINDS``, a test keeps them equal):
named in the prune's WHERE so it walks the ``(kind, received_at)`` index."""


class SqlRetentionRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def prune_uploads(self, before: float, limit: int = 5000) -> int:
        """Delete up to ``limit`` raw uploads received before ``before``, remembering their
        (device, seq) as pruned; how many went."""
        with self.db.transaction() as tx:
            rows = tx.rows(
                "SELECT device_id, seq FROM uploads WHERE kind IN (?, ?) AND received_at < ?"
                " LIMIT ?",
                [*KINDS, before, limit],
            )
            if not rows:
                return 0
            seqs: dict[str, list[int]] = {}
            for r in rows:
                seqs.setdefault(str(r["device_id"]), []).append(int(r["seq"]))
            known = _ranges(tx, sorted(seqs))
            for device_id, pruned in seqs.items():
                merged = merge_ranges(known.get(device_id, []), pruned)
                tx.execute("DELETE FROM upload_pruned WHERE device_id = ?", [device_id])
                tx.execute_many(
                    "INSERT INTO upload_pruned (device_id, lo, hi) VALUES (?, ?, ?)",
                    [[device_id, lo, hi] for lo, hi in merged],
                )
            tx.execute_many(
                "DELETE FROM uploads WHERE device_id = ? AND seq = ?",
                [[r["device_id"], r["seq"]] for r in rows],
            )
        return len(rows)

    def pruned_uploads(self, device_id: str) -> list[Range]:
        """The ranges of ``device_id``'s seqs received and pruned, sorted."""
        with self.db.transaction() as tx:
            return _ranges(tx, [device_id]).get(device_id, [])

    def prune_captures(self, before: float, limit: int = 5000) -> tuple[int, int]:
        """Delete up to ``limit`` captures predicted before ``before`` with their explanations,
        and the labels of prediction ids left without a capture; (captures, labels) gone."""
        with self.db.transaction() as tx:
            rows = tx.rows(
                "SELECT prediction_id, device_id FROM captures WHERE at < ? ORDER BY at LIMIT ?",
                [before, limit],
            )
            keys = [[r["prediction_id"], r["device_id"]] for r in rows]
            tx.execute_many("DELETE FROM captures WHERE prediction_id = ? AND device_id = ?", keys)
            tx.execute_many(
                "DELETE FROM explanations WHERE prediction_id = ? AND device_id = ?", keys
            )
            labels = 0
            ids = sorted({str(r["prediction_id"]) for r in rows})
            for i in range(0, len(ids), CHUNK):
                part = ids[i : i + CHUNK]
                labels += tx.execute(
                    f"DELETE FROM feedback WHERE prediction_id IN ({', '.join('?' * len(part))})"
                    " AND NOT EXISTS (SELECT 1 FROM captures c"
                    " WHERE c.prediction_id = feedback.prediction_id)",
                    part,
                )
        return len(rows), labels

    def prune_labels(self, before: float, limit: int = 5000) -> int:
        """Delete up to ``limit`` feedback labels received before ``before`` that no capture
        has (never matched, or their capture pruned); how many went."""
        with self.db.transaction() as tx:
            return tx.execute(
                "DELETE FROM feedback WHERE prediction_id IN (SELECT f.prediction_id"
                " FROM feedback f WHERE f.received_at < ? AND NOT EXISTS (SELECT 1 FROM"
                " captures c WHERE c.prediction_id = f.prediction_id) LIMIT ?)",
                [before, limit],
            )


def _ranges(tx: Tx, device_ids: Sequence[str]) -> dict[str, list[Range]]:
    out: dict[str, list[Range]] = {}
    for i in range(0, len(device_ids), CHUNK):
        part = list(device_ids[i : i + CHUNK])
        for r in tx.rows(
            "SELECT device_id, lo, hi FROM upload_pruned"
            f" WHERE device_id IN ({', '.join('?' * len(part))}) ORDER BY device_id, lo",
            part,
        ):
            out.setdefault(str(r["device_id"]), []).append((int(r["lo"]), int(r["hi"])))
    return out
