"""runtime.Model around a stub runtime: validation, NaN checks via feature rows, telemetry."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from manifests import make_manifest

from edge_agent.core.telemetry import ModelTelemetry
from edge_agent.errors import InvalidInput, ScoringError
from edge_agent.package import Package
from edge_agent.runtime import Model

MANIFEST = make_manifest((3, 10, 10), classes=4)  # 300 elements: channel features


class Stub:
    signature = MANIFEST.signature

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def predict(self, inputs: Any) -> dict[str, np.ndarray]:
        if self.fail:
            raise RuntimeError("kernel exploded")
        batch = inputs["input"].shape[0]
        return {"output": np.tile(np.array([[0.1, 0.2, 0.6, 0.1]], np.float32), (batch, 1))}


def model(telemetry: bool = True, fail: bool = False) -> Model:
    package = Package(manifest=MANIFEST, model_bytes=b"", sha256="0" * 64, size_bytes=0)
    recorder = ModelTelemetry(MANIFEST) if telemetry else None
    return Model(package, Stub(fail), "reject", recorder)


@pytest.mark.parametrize("telemetry", [True, False])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs_are_rejected(telemetry: bool, bad: float) -> None:
    x = np.zeros((2, 3, 10, 10), np.float32)
    x[1, 2, 3, 4] = bad
    with pytest.raises(InvalidInput, match="1 NaN or infinite"):
        model(telemetry).predict({"input": x})


def test_huge_finite_values_are_accepted_despite_overflowing_sums() -> None:
    x = np.full((1, 3, 10, 10), 3e38, np.float32)  # float32 channel sums overflow to inf
    outputs = model().predict({"input": x})
    assert outputs["output"].shape == (1, 4)


def test_telemetry_counts_calls_rejections_and_failures() -> None:
    m = model()
    ok = np.random.default_rng(0).normal(size=(5, 3, 10, 10)).astype(np.float32)
    _, prediction_id = m.predict_with_id({"input": ok})
    with pytest.raises(InvalidInput):
        m.predict({"input": np.zeros((1, 3, 10, 9), np.float32)})
    broken = model(fail=True)
    with pytest.raises(ScoringError, match="kernel exploded"):
        broken.predict({"input": ok})
    assert prediction_id
    assert m.telemetry is not None and broken.telemetry is not None
    window = m.telemetry.close_window("d", 1)
    assert (window["requests"], window["rows"], window["invalid"]) == (2, 5, 1)
    channels = window["inputs"][0]["features"]
    assert len(channels) == 3 and all(sum(c["counts"]) == 5 for c in channels)
    assert window["outputs"][0]["features"][0]["counts"][2] == 5
    assert broken.telemetry.close_window("d", 2)["errors"] == 1
