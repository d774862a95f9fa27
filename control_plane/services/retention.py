"""Retention: recent telemetry at full resolution, older windows merged, old raw data pruned.

``RetentionService.run(now)`` (the serve timer calls it every ``interval_s``):

1. windows started more than ``full_resolution_s`` ago are merged into one rollup per
   (device, package, ``bucket_s`` bucket) — counts and histograms add exactly, the latency
   KLL sketches merge within their rank error — in batches of ``batch`` windows, each batch
   one transaction (the windows go in the transaction that writes their rollup);
2. rollups whose bucket ended more than ``keep_s`` ago are deleted (``keep_s`` 0: kept);
3. raw uploads received more than ``uploads_s`` ago are deleted (0: kept), their
   (device, seq) kept as pruned ranges in the same transaction, so a resend is still
   acked as a duplicate and not stored again (see ``store/sql/retention.py``);
4. captures predicted more than ``captures_s`` ago are deleted (0: kept) with their
   explanations and the labels left without a capture; labels that never matched a
   capture go once received more than ``captures_s`` ago.

Drift, accuracy and the metrics read rollups like windows (a rollup counts the windows it
merged); the rollout gates read the indexed windows, never the raw uploads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from control_plane.store.repos import Repositories

logger = logging.getLogger(__name__)

DAY = 86400.0


@dataclass(frozen=True)
class RetentionPolicy:
    full_resolution_s: float = 2 * DAY  # windows of the last 2 days as uploaded
    bucket_s: float = 3600.0  # older ones merged per hour
    keep_s: float = 90 * DAY  # rollups kept 90 days (0: forever)
    interval_s: float = 600.0  # how often serve runs it (0: never)
    batch: int = 5000  # rows a transaction
    uploads_s: float = 7 * DAY  # raw uploads kept 7 days (0: forever)
    captures_s: float = 30 * DAY  # captures (sealed samples) kept 30 days (0: forever)

    def __post_init__(self) -> None:
        if self.full_resolution_s <= 0 or self.bucket_s <= 0:
            raise ValueError("retention: full resolution and bucket must be > 0 seconds")
        if self.keep_s and self.keep_s < self.full_resolution_s:
            raise ValueError(
                f"retention: keep ({self.keep_s:.0f} s) is shorter than the full-resolution"
                f" age ({self.full_resolution_s:.0f} s)"
            )
        if self.uploads_s < 0 or self.captures_s < 0:
            raise ValueError("retention: the uploads and captures periods must be >= 0 (0: kept)")
        if self.batch < 1:
            raise ValueError(f"retention batch {self.batch}: expected >= 1")


@dataclass(frozen=True)
class RetentionResult:
    merged: int  # windows merged into rollups
    rollups: int  # rollup rows written (new or grown)
    dropped: int  # rollups deleted
    uploads: int = 0  # raw uploads pruned
    captures: int = 0  # captures pruned (with their explanations)
    labels: int = 0  # feedback labels pruned


class RetentionService:
    def __init__(self, repos: Repositories, policy: RetentionPolicy | None = None) -> None:
        self.repos = repos
        self.policy = policy or RetentionPolicy()

    def run(self, now: float) -> RetentionResult:
        p = self.policy
        merged = written = 0
        while True:
            n, rollups = self.repos.monitoring.downsample(
                now - p.full_resolution_s, p.bucket_s, p.batch
            )
            merged, written = merged + n, written + rollups
            if n < p.batch:
                break
        dropped = self.repos.monitoring.drop_rollups(now - p.keep_s) if p.keep_s else 0
        retention = self.repos.retention
        uploads = captures = labels = 0
        if p.uploads_s:
            uploads = _batches(lambda: retention.prune_uploads(now - p.uploads_s, p.batch), p.batch)
        if p.captures_s:
            before = now - p.captures_s
            while True:
                n, gone = retention.prune_captures(before, p.batch)
                captures, labels = captures + n, labels + gone
                if n < p.batch:
                    break
            labels += _batches(lambda: retention.prune_labels(before, p.batch), p.batch)
        result = RetentionResult(merged, written, dropped, uploads, captures, labels)
        if merged or dropped or uploads or captures or labels:
            logger.info(
                "retention: %d window(s) merged into %d rollup(s), %d rollup(s) dropped,"
                " %d raw upload(s), %d capture(s) and %d label(s) pruned",
                merged, written, dropped, uploads, captures, labels,
            )  # fmt: skip
        return result


def _batches(step: Callable[[], int], batch: int) -> int:
    """Run ``step`` (one transaction of at most ``batch`` rows) until a short one; the sum."""
    total = 0
    while True:
        n = step()
        total += n
        if n < batch:
            return total
