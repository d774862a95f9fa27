"""Each gate as a pure function of readings: pass, fail or pending, with the numbers."""

from __future__ import annotations

import pytest

from control_plane.core.rollout_gates import (
    AvailabilityGate,
    DriftGate,
    ErrorRateGate,
    GateInput,
    GateResult,
    InstallCounts,
    InstallGate,
    LatencyGate,
    NoDrift,
    Verdict,
    VersionStats,
    WaveReadings,
    gates_for,
    overall,
)
from control_plane.core.rollout_spec import (
    AvailabilityGateConfig,
    DriftGateConfig,
    ErrorRateGateConfig,
    LatencyGateConfig,
    parse_spec,
)

INSTALL = InstallGate(success_threshold=0.9, failure_threshold=0.2, min_finished=5)


@pytest.mark.parametrize(
    ("counts", "verdict"),
    [
        (InstallCounts(0, 0, 0, 0), "pending"),
        (InstallCounts(10, 2, 2, 0), "pending"),  # 2 of 4 failed but fewer than 5 finished
        (InstallCounts(10, 3, 2, 0), "fail"),  # 2 of 5 = 40% > 20%
        (InstallCounts(10, 4, 0, 1), "pending"),  # 1 of 5 = 20%, not over
        (InstallCounts(10, 8, 1, 1), "fail"),  # 20% failed is allowed, 80% < 90% succeeded is not
        (InstallCounts(10, 9, 0, 1), "pass"),
        (InstallCounts(10, 10, 0, 0), "pass"),
        (InstallCounts(3, 2, 1, 0), "fail"),  # small wave: finished, 67% < 90%
    ],
)
def test_install_gate(counts: InstallCounts, verdict: Verdict) -> None:
    result = INSTALL.evaluate(GateInput(now=0, install=counts))
    assert result.verdict == verdict, result.reason
    if counts.total:
        assert result.numbers["total"] == counts.total


def readings(
    new: tuple[int, int, float | None],
    base: tuple[int, int, float | None] | None = (1000, 10, 10.0),
    at: float = 100.0,
) -> WaveReadings:
    return WaveReadings(
        at=at,
        new=VersionStats(*new),
        baseline=VersionStats(*base) if base is not None else None,
    )


ERRORS = ErrorRateGate(
    ErrorRateGateConfig(min_requests=100, max_error_rate=0.05, max_increase=0.02)
)


@pytest.mark.parametrize(
    ("r", "fresh_after", "verdict", "limit"),
    [
        (None, None, "pending", None),
        (readings((99, 50, 5.0)), None, "pending", None),  # too few requests, however bad
        (readings((1000, 20, 5.0)), None, "pass", 0.03),  # 2% <= 1% + 2%
        (readings((1000, 31, 5.0)), None, "fail", 0.03),  # 3.1% > 1% + 2%
        (readings((1000, 40, 5.0), base=(1000, 40, 5.0)), None, "pass", 0.05),
        (readings((1000, 60, 5.0), base=(1000, 50, 5.0)), None, "fail", 0.05),  # absolute cap
        (readings((1000, 40, 5.0), base=None), None, "pass", 0.05),  # no baseline: the cap
        (readings((1000, 40, 5.0), base=(10, 0, 5.0)), None, "pass", 0.05),  # thin baseline
        (readings((1000, 20, 5.0)), 200.0, "pending", 0.03),  # taken before the bake ended
        (readings((1000, 31, 5.0)), 200.0, "fail", 0.03),  # ...but may still fail it
    ],
)
def test_error_rate_gate(
    r: WaveReadings | None, fresh_after: float | None, verdict: Verdict, limit: float | None
) -> None:
    result = ERRORS.evaluate(GateInput(now=300, readings=r, fresh_after=fresh_after))
    assert result.verdict == verdict, result.reason
    if limit is not None:
        assert result.numbers["limit"] == pytest.approx(limit)


LATENCY = LatencyGate(LatencyGateConfig(min_requests=100, max_ratio=1.5, slack_ms=1.0))


@pytest.mark.parametrize(
    ("r", "config", "verdict"),
    [
        (readings((50, 0, 99.0)), None, "pending"),
        (readings((500, 0, None)), None, "pending"),
        (readings((500, 0, 16.0)), None, "pass"),  # 16 <= 10 * 1.5 + 1
        (readings((500, 0, 16.1)), None, "fail"),
        (readings((500, 0, 100.0), base=None), None, "pass"),  # no baseline, no cap
        (readings((500, 0, 100.0), base=None), LatencyGateConfig(max_p95_ms=50), "fail"),
        (readings((500, 0, 12.0)), LatencyGateConfig(max_p95_ms=11), "fail"),  # tighter cap wins
    ],
)
def test_latency_gate(r: WaveReadings, config: LatencyGateConfig | None, verdict: Verdict) -> None:
    gate = LatencyGate(config) if config is not None else LATENCY
    assert gate.evaluate(GateInput(now=0, readings=r)).verdict == verdict


@pytest.mark.parametrize(
    ("score", "samples", "verdict"),
    [(None, 0, "pending"), (0.5, 10, "pending"), (0.25, 5000, "fail"), (0.05, 5000, "pass")],
)
def test_drift_gate(score: float | None, samples: int, verdict: Verdict) -> None:
    r = WaveReadings(at=0, new=VersionStats(0, 0), drift_score=score, drift_samples=samples)
    gate = DriftGate(DriftGateConfig(enabled=True, max_score=0.2, min_samples=1000))
    assert gate.evaluate(GateInput(now=0, readings=r)).verdict == verdict


def test_the_no_drift_default_never_scores() -> None:
    assert NoDrift().drift("digits", "2", ["dev-1"], since=0.0) is None


@pytest.mark.parametrize(
    ("watched", "silent", "verdict"), [(0, 0, "pending"), (20, 1, "pass"), (20, 2, "fail")]
)
def test_availability_gate(watched: int, silent: int, verdict: Verdict) -> None:
    gate = AvailabilityGate(AvailabilityGateConfig(max_silent_fraction=0.05))
    result = gate.evaluate(GateInput(now=0, watched=watched, silent=silent))
    assert result.verdict == verdict
    assert result.numbers["silent"] == silent


@pytest.mark.parametrize(
    ("verdicts", "combined"),
    [
        ([], "pending"),
        (["pass", "pass"], "pass"),
        (["pass", "pending"], "pending"),
        (["pending", "fail"], "fail"),
    ],
)
def test_overall(verdicts: list[Verdict], combined: Verdict) -> None:
    assert overall([GateResult(f"g{i}", v, "") for i, v in enumerate(verdicts)]) == combined


def test_which_gates_a_target_gets() -> None:
    base = {"model": "m", "version": "2", "waves": [{"percent": 100}]}
    devices = parse_spec({**base, "target": {"kind": "devices"}})
    assert [g.name for g in gates_for(devices)] == [
        "install",
        "availability",
        "error_rate",
        "latency",
    ]
    alias = parse_spec(
        {
            **base,
            "target": {"kind": "alias", "alias": "prod"},
            "waves": [{"traffic": 100}],
            "gates": {"drift": {"enabled": True}, "latency": {"enabled": False}},
        }
    )
    assert [g.name for g in gates_for(alias)] == ["error_rate", "drift"]


def test_readings_round_trip_through_a_dict() -> None:
    r = readings((10, 1, 3.5), base=None)
    assert WaveReadings.from_dict(r.to_dict()) == r
