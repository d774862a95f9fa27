"""Health gates of a rollout wave: pure functions of readings → pass / fail / pending.

Each gate returns a :class:`GateResult` with the numbers that decided, so the
audit log and ``GET /api/v1/rollouts/{id}`` can show why a wave moved or
stopped. A gate with too few samples is ``pending``, never ``pass``; a wave is
promoted only when every gate passes after its bake.

- ``install``: failed / timed-out share among finished devices (with a minimum
  number finished, AWS IoT Jobs' abort criteria) and the success share of the
  whole wave once every device finished (hawkBit's success condition).
- ``error_rate`` / ``latency``: the new version against the previous version on
  the same devices (or alias), from agent or function telemetry merged by the
  readings source; relative and absolute limits, minimum request counts
  (the defaults mirror the agent's own health watch, ``edge_agent/core/health.py``).
- ``drift``: a score the monitoring service computes (:class:`DriftSource`;
  :class:`NoDrift` is the default), or monitoring's firing drift alerts on the version
  (:class:`DriftAlerts`, ``AlertService.blocks_rollout``; :class:`NoDriftAlerts` when
  monitoring is off): a firing alert fails the wave. The gate is off by default.
- ``availability``: devices of the wave silent for longer than ``silent_after_s``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

from control_plane.core.rollout_spec import (
    AvailabilityGateConfig,
    DriftGateConfig,
    ErrorRateGateConfig,
    LatencyGateConfig,
    RolloutSpec,
)

Verdict = Literal["pass", "fail", "pending"]
Number = float | int | None


@dataclass(frozen=True)
class VersionStats:
    """Traffic of one version over a wave's devices (or an alias) since the wave started."""

    requests: int
    failures: int
    p95_ms: float | None = None

    @property
    def error_rate(self) -> float:
        return self.failures / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class WaveReadings:
    """What the readings source measured for a wave, at ``at`` (seconds since the epoch)."""

    at: float
    new: VersionStats
    baseline: VersionStats | None = None
    drift_score: float | None = None
    drift_samples: int = 0
    drift_alerts: tuple[str, ...] | None = None
    """Firing drift alerts gating rollouts on the version ([]: none fire; None: no monitoring)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WaveReadings:
        base = data.get("baseline")
        return cls(
            at=float(data["at"]),
            new=VersionStats(**data["new"]),
            baseline=VersionStats(**base) if base is not None else None,
            drift_score=data.get("drift_score"),
            drift_samples=int(data.get("drift_samples", 0)),
            drift_alerts=_alerts(data.get("drift_alerts")),
        )


def _alerts(value: Any) -> tuple[str, ...] | None:
    return None if value is None else tuple(str(a) for a in value)


@dataclass(frozen=True)
class InstallCounts:
    """A wave's devices by outcome (devices that left the target are not counted)."""

    total: int
    succeeded: int
    failed: int
    """Install and self-test failures together..."""
    timed_out: int
    self_test_failed: int = 0
    """...of which this many failed the on-device self-test."""

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed + self.timed_out

    @property
    def in_flight(self) -> int:
        return self.total - self.finished


@dataclass(frozen=True)
class GateInput:
    now: float
    install: InstallCounts | None = None
    readings: WaveReadings | None = None
    fresh_after: float | None = None
    """Readings taken before this (the end of the bake) may fail a gate but not pass it."""
    watched: int = 0
    silent: int = 0


@dataclass(frozen=True)
class GateResult:
    gate: str
    verdict: Verdict
    reason: str
    numbers: Mapping[str, Number] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "gate": self.gate,
            "verdict": self.verdict,
            "reason": self.reason,
            "numbers": dict(self.numbers),
        }


class Gate(Protocol):
    @property
    def name(self) -> str: ...

    def evaluate(self, inp: GateInput) -> GateResult: ...


class DriftSource(Protocol):
    """Where the drift score of a wave comes from (the monitoring service fills it)."""

    def drift(
        self, model: str, version: str, subjects: Sequence[str], since: float
    ) -> tuple[float, int] | None:
        """(score, samples), or None when nothing was measured."""
        ...


class NoDrift:
    """The default until monitoring exists: no score, so an enabled drift gate stays pending."""

    def drift(
        self, model: str, version: str, subjects: Sequence[str], since: float
    ) -> tuple[float, int] | None:
        return None


class DriftAlerts(Protocol):
    """Monitoring's alerting: which firing alerts block promoting a version."""

    def firing(self, model: str, version: str) -> list[str] | None:
        """Ids of the firing alerts that gate rollouts on ``model`` ``version`` ([]: none);
        None when monitoring is off (the drift gate then needs a score)."""
        ...


class NoDriftAlerts:
    """The default when monitoring is off: nothing known, the drift gate needs a score."""

    def firing(self, model: str, version: str) -> list[str] | None:
        return None


def _stale(inp: GateInput) -> bool:
    readings = inp.readings
    return readings is None or (inp.fresh_after is not None and readings.at < inp.fresh_after)


@dataclass(frozen=True)
class InstallGate:
    success_threshold: float
    failure_threshold: float
    min_finished: int
    name: str = "install"

    def evaluate(self, inp: GateInput) -> GateResult:
        c = inp.install
        if c is None or c.total == 0:
            return GateResult(self.name, "pending", "no devices in the wave")
        bad = c.failed + c.timed_out
        numbers: dict[str, Number] = {
            "total": c.total,
            "succeeded": c.succeeded,
            "failed": c.failed,
            "self_test_failed": c.self_test_failed,
            "timed_out": c.timed_out,
            "finished": c.finished,
            "failure_ratio": bad / c.finished if c.finished else None,
            "failure_threshold": self.failure_threshold,
            "min_finished": self.min_finished,
            "success_ratio": c.succeeded / c.total,
            "success_threshold": self.success_threshold,
        }
        if c.finished >= self.min_finished and bad / c.finished > self.failure_threshold:
            reason = (
                f"{bad} of {c.finished} finished devices failed "
                f"({bad / c.finished:.1%} > {self.failure_threshold:.1%})"
            )
            return GateResult(self.name, "fail", reason, numbers)
        if c.in_flight:
            return GateResult(
                self.name, "pending", f"{c.in_flight} of {c.total} in flight", numbers
            )
        if c.succeeded / c.total < self.success_threshold:
            reason = (
                f"{c.succeeded} of {c.total} succeeded "
                f"({c.succeeded / c.total:.1%} < {self.success_threshold:.1%})"
            )
            return GateResult(self.name, "fail", reason, numbers)
        return GateResult(self.name, "pass", f"{c.succeeded} of {c.total} succeeded", numbers)


@dataclass(frozen=True)
class ErrorRateGate:
    config: ErrorRateGateConfig
    name: str = "error_rate"

    def evaluate(self, inp: GateInput) -> GateResult:
        r, cfg = inp.readings, self.config
        if r is None:
            return GateResult(self.name, "pending", "no readings yet")
        numbers: dict[str, Number] = {
            "requests": r.new.requests,
            "min_requests": cfg.min_requests,
            "error_rate": r.new.error_rate,
            "baseline_error_rate": None,
            "limit": cfg.max_error_rate,
        }
        if r.new.requests < cfg.min_requests:
            why = f"{r.new.requests} requests < {cfg.min_requests}"
            return GateResult(self.name, "pending", why, numbers)
        limit = cfg.max_error_rate
        if r.baseline is not None and r.baseline.requests >= cfg.min_requests:
            numbers["baseline_error_rate"] = r.baseline.error_rate
            limit = min(limit, r.baseline.error_rate + cfg.max_increase)
            numbers["limit"] = limit
        if r.new.error_rate > limit:
            why = f"error rate {r.new.error_rate:.4f} over {r.new.requests} requests > {limit:.4f}"
            return GateResult(self.name, "fail", why, numbers)
        if _stale(inp):
            return GateResult(self.name, "pending", "waiting for readings after the bake", numbers)
        why = f"error rate {r.new.error_rate:.4f} <= {limit:.4f}"
        return GateResult(self.name, "pass", why, numbers)


@dataclass(frozen=True)
class LatencyGate:
    config: LatencyGateConfig
    name: str = "latency"

    def evaluate(self, inp: GateInput) -> GateResult:
        r, cfg = inp.readings, self.config
        if r is None:
            return GateResult(self.name, "pending", "no readings yet")
        numbers: dict[str, Number] = {
            "requests": r.new.requests,
            "min_requests": cfg.min_requests,
            "p95_ms": r.new.p95_ms,
            "baseline_p95_ms": None,
            "limit_ms": cfg.max_p95_ms,
        }
        if r.new.requests < cfg.min_requests or r.new.p95_ms is None:
            why = f"{r.new.requests} requests < {cfg.min_requests} (or no p95 yet)"
            return GateResult(self.name, "pending", why, numbers)
        limits = [cfg.max_p95_ms] if cfg.max_p95_ms is not None else []
        base = r.baseline
        if base is not None and base.requests >= cfg.min_requests and base.p95_ms is not None:
            numbers["baseline_p95_ms"] = base.p95_ms
            limits.append(base.p95_ms * cfg.max_ratio + cfg.slack_ms)
        limit = min(limits) if limits else None
        numbers["limit_ms"] = limit
        if limit is not None and r.new.p95_ms > limit:
            why = f"p95 {r.new.p95_ms:.3f} ms > {limit:.3f} ms"
            return GateResult(self.name, "fail", why, numbers)
        if _stale(inp):
            return GateResult(self.name, "pending", "waiting for readings after the bake", numbers)
        why = f"p95 {r.new.p95_ms:.3f} ms within {limit:.3f} ms" if limit else "no baseline, no cap"
        return GateResult(self.name, "pass", why, numbers)


@dataclass(frozen=True)
class DriftGate:
    config: DriftGateConfig
    name: str = "drift"

    def evaluate(self, inp: GateInput) -> GateResult:
        r, cfg = inp.readings, self.config
        score = r.drift_score if r is not None else None
        samples = r.drift_samples if r is not None else 0
        alerts = r.drift_alerts if r is not None else None
        numbers: dict[str, Number] = {
            "score": score,
            "samples": samples,
            "max_score": cfg.max_score,
            "min_samples": cfg.min_samples,
            "firing_alerts": None if alerts is None else len(alerts),
        }
        if alerts:
            why = f"{len(alerts)} firing drift alert(s) on the version: {', '.join(alerts)}"
            return GateResult(self.name, "fail", why, numbers)
        if alerts is not None and score is None:
            if _stale(inp):
                return GateResult(
                    self.name, "pending", "waiting for a check after the bake", numbers
                )
            return GateResult(self.name, "pass", "no firing drift alert on the version", numbers)
        if score is None or samples < cfg.min_samples:
            return GateResult(
                self.name, "pending", f"{samples} samples < {cfg.min_samples}", numbers
            )
        if score > cfg.max_score:
            return GateResult(self.name, "fail", f"drift {score:.3f} > {cfg.max_score}", numbers)
        if _stale(inp):
            return GateResult(self.name, "pending", "waiting for readings after the bake", numbers)
        return GateResult(self.name, "pass", f"drift {score:.3f} <= {cfg.max_score}", numbers)


@dataclass(frozen=True)
class AvailabilityGate:
    config: AvailabilityGateConfig
    name: str = "availability"

    def evaluate(self, inp: GateInput) -> GateResult:
        cfg = self.config
        numbers: dict[str, Number] = {
            "watched": inp.watched,
            "silent": inp.silent,
            "silent_after_s": cfg.silent_after_s,
            "max_silent_fraction": cfg.max_silent_fraction,
        }
        if inp.watched == 0:
            return GateResult(self.name, "pending", "no device of the wave to watch", numbers)
        share = inp.silent / inp.watched
        if share > cfg.max_silent_fraction:
            why = f"{inp.silent} of {inp.watched} devices silent > {cfg.silent_after_s:.0f} s"
            return GateResult(self.name, "fail", why, numbers)
        return GateResult(self.name, "pass", f"{inp.silent} of {inp.watched} silent", numbers)


def gates_for(spec: RolloutSpec) -> list[Gate]:
    """The gates a wave of this spec must pass, in evaluation order."""
    gates: list[Gate] = []
    if spec.target.kind == "devices":
        gates.append(InstallGate(spec.success_threshold, spec.failure_threshold, spec.min_finished))
        if spec.gates.availability.enabled:
            gates.append(AvailabilityGate(spec.gates.availability))
    if spec.gates.error_rate.enabled:
        gates.append(ErrorRateGate(spec.gates.error_rate))
    if spec.gates.latency.enabled:
        gates.append(LatencyGate(spec.gates.latency))
    if spec.gates.drift.enabled:
        gates.append(DriftGate(spec.gates.drift))
    return gates


def overall(results: Sequence[GateResult]) -> Verdict:
    """fail if any fails, pass if all pass (and there is at least one), else pending."""
    if any(r.verdict == "fail" for r in results):
        return "fail"
    if results and all(r.verdict == "pass" for r in results):
        return "pass"
    return "pending"
