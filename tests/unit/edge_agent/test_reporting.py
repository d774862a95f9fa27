"""The reporter: windows and status reports sequenced into the outbox and sent until acked."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from edge_agent.core.telemetry import ModelTelemetry
from edge_agent.outbox import Outbox
from edge_agent.package import read_package
from edge_agent.reporting import Reporter
from edge_agent.transport.memory import InMemoryTransport


def _telemetry(edge_packages: Any) -> ModelTelemetry:
    manifest = read_package(edge_packages.onnx.read_bytes())[0]
    return ModelTelemetry(manifest)


def test_record_sequences_windows_and_flush_sends_until_acked(
    tmp_path: Path, edge_packages: Any
) -> None:
    transport = InMemoryTransport()
    outbox = Outbox(tmp_path / "outbox.sqlite")
    reporter = Reporter(outbox, transport, "dev-1")
    telemetry = _telemetry(edge_packages)
    assert reporter.record(telemetry) is None  # no traffic: no window
    telemetry.record_failure("invalid", 0.001)
    first = reporter.record(telemetry)
    telemetry.record_failure("error", 0.001)
    second = reporter.record(telemetry)
    assert first is not None and second is not None
    assert (first["sequence"], second["sequence"]) == (1, 2)
    transport.online = False
    assert reporter.flush() == 0 and reporter.pending() == 2  # nothing lost while offline
    transport.online = True
    assert reporter.flush() == 2 and reporter.pending() == 0
    windows = transport.delivered_of("telemetry_window")
    assert [(w["invalid"], w["errors"]) for w in windows] == [(1, 0), (0, 1)]
    outbox.close()


def test_flush_stops_at_the_deadline_and_status_reports_carry_a_sequence(
    tmp_path: Path, edge_packages: Any
) -> None:
    transport = InMemoryTransport()
    outbox = Outbox(tmp_path / "outbox.sqlite")
    reporter = Reporter(outbox, transport, "dev-1", sequence=iter(range(100, 200)).__next__)
    reporter.status({"event": "healthy"}, "k1")
    reporter.status({"event": "healthy"}, "k1")  # the same key is stored once
    assert reporter.flush(deadline=time.monotonic() - 1) == 0  # past: no batch starts
    assert reporter.flush() == 1
    (status,) = transport.delivered_of("status")
    assert status["sequence"] == 100 and status["device_id"] == "dev-1"
    outbox.close()
