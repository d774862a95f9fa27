"""The monitoring core over a real compiled package: windows -> drift, captures -> accuracy,
explanations through the package's own runtime, lineage of a scored prediction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from control_plane.core.accuracy import (
    Feedback,
    captures_from_window,
    join_feedback,
    measured_metrics,
)
from control_plane.core.drift import evaluate
from control_plane.core.lineage import LineageGraph
from control_plane.core.sketches import reference_features, window_histograms
from control_plane.monitoring.explain import ExplainBudget, ShapExplainer, runtime_predict
from edge_agent.core.telemetry import TelemetryConfig
from edge_agent.runtime import open_model

pytestmark = pytest.mark.slow


def test_package_telemetry_drift_accuracy_explanations_lineage(
    package: Path, keys: Any, digits_mlp: Any
) -> None:
    config = TelemetryConfig(capture_rate=1.0, max_captures=500)
    model = open_model(package, keys.public, telemetry=config)
    manifest = model.manifest
    assert model.telemetry is not None
    input_name = manifest.signature.inputs[0].name
    output_name = manifest.signature.outputs[0].name
    x = np.asarray(digits_mlp.x_validation, dtype=np.float32)
    y = np.asarray(digits_mlp.y_validation)
    ids = [model.predict_with_id({input_name: x[i : i + 1]})[1] for i in range(len(x))]
    clean = model.telemetry.close_window("dev-1", 1)
    for i in range(len(x)):  # the same digits, brighter and noisier: covariate shift
        rng = np.random.default_rng(i)
        shifted = np.clip(x[i : i + 1] * 1.5 + rng.normal(0, 2, x[i : i + 1].shape), 0, 16)
        model.predict({input_name: shifted.astype(np.float32)})
    drifted = model.telemetry.close_window("dev-1", 2)

    reference = reference_features(manifest.reference)
    quiet = evaluate(reference, window_histograms(clean))
    loud = evaluate(reference, window_histograms(drifted))
    assert quiet.evaluated > 0 and quiet.drifted_share <= 0.05
    assert loud.drifted_share > 0.3 and loud.dataset_drift is (loud.drifted_share >= 0.5)

    captures = captures_from_window(clean, output_name, {"dev-1": "lab"})
    assert [c.prediction_id for c in captures] == ids
    feedback = [Feedback(pid, float(label)) for pid, label in zip(ids, y, strict=True)]
    joined = join_feedback(captures, [*feedback, Feedback("someone-else", 1.0)])
    assert joined.unknown_ids == ("someone-else",)
    (bucket,) = measured_metrics(joined.matched, "classification", bucket_s=1e9)
    assert bucket.count == len(y)
    assert bucket.accuracy == pytest.approx(digits_mlp.fp32_accuracy, abs=0.03)

    predict = runtime_predict(model.loaded, input_name, output_name)
    names = [f.name for f in manifest.reference.inputs[0].features]
    explainer = ShapExplainer(predict, x[:200], names, ExplainBudget(max_rows=4, nsamples=512))
    attr = explainer.explain(x[200:210])
    assert attr.values.shape == (4, x.shape[1]) and attr.skipped_rows == 6
    np.testing.assert_allclose(
        attr.values.sum(axis=1) + attr.base_values, attr.predictions, atol=1e-4
    )

    graph = LineageGraph()
    graph.add_package(manifest)
    graph.set_running("dev-1", manifest.package_id)
    graph.add_prediction(ids[0], graph.add_window("dev-1", 1, manifest.package_id))
    upstream = graph.provenance(ids[0])
    assert [n.id for n in upstream["package"]] == [f"package:{manifest.package_id}"]
    assert upstream["package"][0].attrs["recipe"] == manifest.recipe
