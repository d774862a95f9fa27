"""TelemetryWindow / StatusEvent decode what the agent really sends, old windows included."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError

from edge_agent.core.telemetry import ModelTelemetry, TelemetryConfig
from edge_agent.core.windows import StatusEvent, TelemetryWindow
from tests.unit.control_plane.monitoring_support import monitored_manifest


def _window() -> dict[str, object]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3)).astype(np.float32)
    scores = np.abs(rng.normal(size=(300, 2))).astype(np.float32)
    manifest = monitored_manifest(x, scores)
    telemetry = ModelTelemetry(manifest, TelemetryConfig(capture_rate=1.0, max_captures=2), seed=0)
    for i in range(0, 300, 10):
        telemetry.record({"x": x[i : i + 10]}, {"probs": scores[i : i + 10]}, 0.001)
    telemetry.record_failure("invalid", 0.001)
    return json.loads(json.dumps(telemetry.close_window("cam-1", 3)))  # as sent: JSON


def test_a_real_window_decodes_with_its_package_id_and_histograms() -> None:
    raw = _window()
    window = TelemetryWindow.model_validate(raw)
    assert window.package_id == raw["package_id"] and window.package_id
    assert (window.sequence, window.rows, window.requests, window.invalid) == (3, 300, 31, 1)
    assert window.latency_ms.count == 30 and window.latency_ms.kll
    assert len(window.captures) == 2 and window.captures_dropped == 28
    assert window.histograms() == {"inputs": raw["inputs"], "outputs": raw["outputs"]}


def test_an_older_window_without_the_new_fields_still_decodes() -> None:
    raw = _window()
    for key in ("package_id", "release", "captures", "captures_dropped", "latency_ms"):
        del raw[key]
    raw["trimmed"] = ["captures"]  # fit_window's note, kept as an extra field
    window = TelemetryWindow.model_validate(raw)
    assert window.package_id is None and window.captures == []
    assert window.model_extra == {"trimmed": ["captures"]}


@pytest.mark.parametrize(
    ("change", "where"),
    [({"rows": -1}, "rows"), ({"model_name": ""}, "model_name"), ({"inputs": 3}, "inputs")],
)
def test_a_bad_window_names_the_field(change: dict[str, object], where: str) -> None:
    with pytest.raises(ValidationError) as caught:
        TelemetryWindow.model_validate({**_window(), **change})
    assert caught.value.errors()[0]["loc"][0] == where


def test_status_events() -> None:
    event = StatusEvent.model_validate(
        {
            "kind": "status",
            "device_id": "cam-1",
            "sequence": 4,
            "at": 5.0,
            "event": "installed",
            "sha256": "ab",
        }  # fmt: skip
    )
    assert event.event == "installed" and event.model_extra == {"sha256": "ab"}
    with pytest.raises(ValidationError):
        StatusEvent.model_validate({"kind": "status", "sequence": 4})
