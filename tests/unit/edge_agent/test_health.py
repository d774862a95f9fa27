"""The health watch's decision (pure)."""

from __future__ import annotations

from edge_agent.core.health import HealthPolicy, evaluate_health
from edge_agent.core.telemetry import HealthStats

POLICY = HealthPolicy(
    bake_seconds=60,
    min_requests=20,
    max_error_rate=0.05,
    max_error_rate_increase=0.02,
    max_latency_ratio=2.0,
    latency_slack_ms=1.0,
)
BASELINE = HealthStats(requests=1000, failures=10, latency_ms_p95=2.0)


def test_pending_until_enough_requests_and_bake() -> None:
    decision = evaluate_health(POLICY, BASELINE, HealthStats(5, 5, 100.0), elapsed_s=10)
    assert decision.verdict == "pending"


def test_error_rate_over_baseline_breaches() -> None:
    decision = evaluate_health(POLICY, BASELINE, HealthStats(100, 4, 2.0), elapsed_s=10)
    assert decision.verdict == "breached" and "error rate 0.040" in decision.reason
    assert evaluate_health(POLICY, BASELINE, HealthStats(100, 2, 2.0), 10).verdict == "pending"


def test_latency_over_ratio_breaches() -> None:
    decision = evaluate_health(POLICY, BASELINE, HealthStats(100, 0, 5.5), elapsed_s=10)
    assert decision.verdict == "breached" and "p95 latency" in decision.reason
    assert evaluate_health(POLICY, BASELINE, HealthStats(100, 0, 4.9), 10).verdict == "pending"


def test_without_baseline_only_the_absolute_ceiling_applies() -> None:
    assert evaluate_health(POLICY, None, HealthStats(100, 4, 50.0), 10).verdict == "pending"
    assert evaluate_health(POLICY, None, HealthStats(100, 6, 1.0), 10).verdict == "breached"


def test_healthy_after_bake() -> None:
    decision = evaluate_health(POLICY, BASELINE, HealthStats(100, 1, 2.0), elapsed_s=61)
    assert decision.verdict == "healthy"
    idle = evaluate_health(POLICY, BASELINE, HealthStats(3, 0, None), elapsed_s=61)
    assert idle.verdict == "healthy" and "without evidence" in idle.reason
