"""The health watch after a switch: is the new version worse than the one it replaced?

Pure decision logic. During the bake period the agent compares the new
model's cumulative error rate (runtime errors plus rejected requests) and p95
latency with the previous version's, once at least ``min_requests`` calls
were seen. Without a baseline (first install, or an idle previous version)
only the absolute error-rate ceiling applies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from edge_agent.core.telemetry import HealthStats

Verdict = Literal["pending", "healthy", "breached"]


@dataclass(frozen=True)
class HealthPolicy:
    bake_seconds: float = 300.0
    min_requests: int = 20
    max_error_rate: float = 0.05
    """Absolute ceiling on the new version's error rate."""
    max_error_rate_increase: float = 0.02
    """Allowed increase of the error rate over the baseline's."""
    max_latency_ratio: float = 2.0
    latency_slack_ms: float = 1.0
    """p95 may grow to ratio * baseline + slack before it counts as a breach."""


@dataclass(frozen=True)
class HealthDecision:
    verdict: Verdict
    reason: str


def evaluate_health(
    policy: HealthPolicy,
    baseline: HealthStats | None,
    observed: HealthStats,
    elapsed_s: float,
) -> HealthDecision:
    """Decide whether the watch goes on, passes, or calls for a rollback."""
    enough = observed.requests >= policy.min_requests
    if enough:
        rate = observed.error_rate
        ceiling = policy.max_error_rate
        if baseline is not None and baseline.requests >= policy.min_requests:
            ceiling = min(ceiling, baseline.error_rate + policy.max_error_rate_increase)
        if rate > ceiling:
            return HealthDecision(
                "breached",
                f"error rate {rate:.3f} over {observed.requests} requests exceeds {ceiling:.3f}",
            )
        if (
            baseline is not None
            and baseline.requests >= policy.min_requests
            and baseline.latency_ms_p95 is not None
            and observed.latency_ms_p95 is not None
        ):
            limit = baseline.latency_ms_p95 * policy.max_latency_ratio + policy.latency_slack_ms
            if observed.latency_ms_p95 > limit:
                return HealthDecision(
                    "breached",
                    f"p95 latency {observed.latency_ms_p95:.3f} ms exceeds {limit:.3f} ms "
                    f"(baseline {baseline.latency_ms_p95:.3f} ms)",
                )
    if elapsed_s < policy.bake_seconds:
        return HealthDecision("pending", f"baking: {elapsed_s:.0f}/{policy.bake_seconds:.0f} s")
    if not enough:
        return HealthDecision(
            "healthy",
            f"bake period over with {observed.requests} requests (< {policy.min_requests}); "
            "kept without evidence against it",
        )
    return HealthDecision("healthy", f"no breach over {observed.requests} requests")
