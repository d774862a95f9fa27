"""Retention of telemetry windows: recent ones at full resolution, older ones merged, oldest gone.

``RetentionService.run(now)`` (the serve timer calls it every ``interval_s``):

1. windows started more than ``full_resolution_s`` ago are merged into one rollup per
   (device, package, ``bucket_s`` bucket) — counts and histograms add exactly, the latency
   KLL sketches merge within their rank error — in batches of ``batch`` windows, each batch
   one transaction (the windows go in the transaction that writes their rollup);
2. rollups whose bucket ended more than ``keep_s`` ago are deleted (``keep_s`` 0: kept).

Drift, accuracy and the metrics read rollups like windows (a rollup counts the windows it
merged). The raw uploads (exactly-once bookkeeping, rollout gates) are not touched here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from control_plane.store.repos import Repositories

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetentionPolicy:
    full_resolution_s: float = 2 * 86400.0  # windows of the last 2 days as uploaded
    bucket_s: float = 3600.0  # older ones merged per hour
    keep_s: float = 90 * 86400.0  # rollups kept 90 days (0: forever)
    interval_s: float = 600.0  # how often serve runs it (0: never)
    batch: int = 5000

    def __post_init__(self) -> None:
        if self.full_resolution_s <= 0 or self.bucket_s <= 0:
            raise ValueError("retention: full resolution and bucket must be > 0 seconds")
        if self.keep_s and self.keep_s < self.full_resolution_s:
            raise ValueError(
                f"retention: keep ({self.keep_s:.0f} s) is shorter than the full-resolution"
                f" age ({self.full_resolution_s:.0f} s)"
            )
        if self.batch < 1:
            raise ValueError(f"retention batch {self.batch}: expected >= 1")


@dataclass(frozen=True)
class RetentionResult:
    merged: int  # windows merged into rollups
    rollups: int  # rollup rows written (new or grown)
    dropped: int  # rollups deleted


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
        if merged or dropped:
            logger.info(
                "retention: %d window(s) merged into %d rollup(s), %d rollup(s) dropped",
                merged, written, dropped,
            )  # fmt: skip
        return RetentionResult(merged, written, dropped)
