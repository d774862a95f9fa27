"""Function telemetry: no I/O until a bound, then closed and sent before returning."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from edge_agent.runtime import open_model
from edge_agent.transport.memory import InMemoryTransport
from functions.telemetry import COUNTER_BITS, FunctionTelemetry, TelemetrySettings


def _setup(edge_packages: Any, tmp_path: Path, **kw: Any) -> tuple[Any, Any, InMemoryTransport]:
    model = open_model(edge_packages.onnx, edge_packages.public_key)
    transport = InMemoryTransport()
    settings = replace(TelemetrySettings(outbox_dir=tmp_path / "tmp", device_id="fn"), **kw)
    return model, FunctionTelemetry(model, settings, transport), transport


def test_count_bound_sends_before_returning_and_not_earlier(
    edge_packages: Any, tmp_path: Path
) -> None:
    model, telemetry, transport = _setup(
        edge_packages, tmp_path, max_requests=3, window_seconds=3600
    )
    for _ in range(2):
        model.predict({"input": edge_packages.x[:1]})
        telemetry.after_invocation()
    assert transport.delivered == [] and not telemetry.outbox_open  # no I/O yet
    assert not (tmp_path / "tmp").exists()  # a cold start creates no outbox file
    model.predict({"input": edge_packages.x[:4]})
    telemetry.after_invocation()
    (window,) = transport.delivered_of("telemetry_window")
    assert (window["requests"], window["rows"], window["device_id"]) == (3, 6, "fn")
    assert window["sequence"] >> COUNTER_BITS > 0  # the container's instance prefix
    telemetry.close()


def test_time_bound_and_an_unreachable_control_plane(edge_packages: Any, tmp_path: Path) -> None:
    model, telemetry, transport = _setup(edge_packages, tmp_path, window_seconds=0.0)
    transport.online = False
    model.predict({"input": edge_packages.x[:1]})
    telemetry.after_invocation()  # due, but the control plane is away: the window waits
    assert transport.delivered == [] and telemetry.reporter.pending() == 1
    transport.online = True
    model.predict({"input": edge_packages.x[:1]})
    telemetry.after_invocation()
    windows = transport.delivered_of("telemetry_window")
    assert [w["requests"] for w in windows] == [1, 1]
    assert windows[1]["sequence"] == windows[0]["sequence"] + 1
    telemetry.close()


def test_a_recycled_container_drains_the_outbox_it_finds(
    edge_packages: Any, tmp_path: Path
) -> None:
    model, telemetry, transport = _setup(edge_packages, tmp_path, window_seconds=0.0)
    transport.online = False
    model.predict({"input": edge_packages.x[:2]})
    telemetry.after_invocation()  # the window is closed into /tmp, not delivered
    assert telemetry.outbox_open and telemetry.reporter.pending() == 1
    telemetry.reporter.outbox.close()  # the process is killed frozen; /tmp survives

    transport.online = True
    again = FunctionTelemetry(model, telemetry.settings, transport)  # the next process
    (window,) = transport.delivered_of("telemetry_window")
    assert window["rows"] == 2 and again.reporter.pending() == 0
    again.close()
