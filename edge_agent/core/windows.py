"""Typed telemetry: what a device uploads, as pydantic models (no I/O).

:class:`TelemetryWindow` is the dict :meth:`ModelTelemetry.close_window
<edge_agent.core.telemetry.ModelTelemetry.close_window>` returns (trimmed by
``fit_window`` when over the outbox's message size); :class:`StatusEvent` is a
status report. Shared by the agent, functions and the control plane, which
decodes each upload once at ingest. Unknown fields are kept (a newer agent may
send more); fields added after the first agents shipped (``package_id``,
``release``, ``captures_dropped``...) are optional, so older windows still
decode.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class FeatureHistogram(_Open):
    name: str
    kind: str = "numeric"
    counts: list[int] = Field(default_factory=list)


class TensorHistograms(_Open):
    tensor: str
    feature_axis: str | None = None
    features: list[FeatureHistogram] = Field(default_factory=list)


class LatencySummary(_Open):
    count: int = Field(0, ge=0)
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    max: float | None = None
    kll: str | None = None  # base64 of the serialized KLL sketch


class CaptureRecord(_Open):
    prediction_id: str = Field(min_length=1, max_length=128)
    at: float
    source: str = "sampled"
    inputs: dict[str, Any] = Field(default_factory=dict)
    outputs: dict[str, Any] = Field(default_factory=dict)


class TelemetryWindow(_Open):
    """One closed window of one model's traffic on one device."""

    kind: Literal["telemetry_window"] = "telemetry_window"
    device_id: str = Field(min_length=1)
    sequence: int = Field(ge=0)
    model_name: str = Field(min_length=1)
    model_version: str = Field(min_length=1)
    package_id: str | None = None  # the manifest's package id (absent from old agents)
    release: int | None = None
    started_at: float
    ended_at: float
    requests: int = Field(0, ge=0)
    rows: int = Field(0, ge=0)
    errors: int = Field(0, ge=0)
    invalid: int = Field(0, ge=0)
    latency_ms: LatencySummary = Field(default_factory=lambda: LatencySummary(count=0))
    inputs: list[TensorHistograms] = Field(default_factory=list)
    outputs: list[TensorHistograms] = Field(default_factory=list)
    captures: list[CaptureRecord] = Field(default_factory=list)
    captures_dropped: int = Field(0, ge=0)
    alias: str | None = None  # a function container's alias (FUNCTION:ALIAS), if it has one

    def histograms(self) -> dict[str, Any]:
        """The inputs' and outputs' histograms as JSON (what the drift evaluation reads)."""
        return {
            "inputs": [t.model_dump(mode="json") for t in self.inputs],
            "outputs": [t.model_dump(mode="json") for t in self.outputs],
        }


class StatusEvent(_Open):
    """A status report (install, rollback, health ...): its own fields beside these."""

    kind: Literal["status"] = "status"
    device_id: str = Field(min_length=1)
    sequence: int = Field(ge=0)
    at: float | None = None  # older agents did not stamp it
    event: str | None = None
