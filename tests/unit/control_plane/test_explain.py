"""SHAP attributions: additivity, the top feature of a one-feature model, the runtime path."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from control_plane.monitoring.explain import (
    ExplainBudget,
    ShapExplainer,
    attribution_drift,
    runtime_predict,
)

NAMES = [f"f{i}" for i in range(6)]


@pytest.fixture(scope="module")
def one_feature_model():
    """A classifier whose label depends on f2 only (the others are noise)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 6))
    y = (x[:, 2] + 0.1 * rng.normal(size=2000) > 0).astype(int)
    return LogisticRegression().fit(x, y), x


def _check_additivity_and_top_feature(attr) -> None:
    np.testing.assert_allclose(
        attr.values.sum(axis=1) + attr.base_values, attr.predictions, atol=1e-6
    )
    means = attr.mean_abs()
    assert max(means, key=means.__getitem__) == "f2"
    assert means["f2"] > 5 * max(v for k, v in means.items() if k != "f2")


def test_sklearn_model_attributions_add_up_and_rank_its_feature_first(one_feature_model):
    model, x = one_feature_model
    explainer = ShapExplainer(model.predict_proba, x[:500], NAMES, ExplainBudget(max_rows=12))
    attr = explainer.explain(x[1000:1040])
    assert attr.values.shape == (12, 6) and attr.skipped_rows == 28
    np.testing.assert_array_equal(attr.outputs, model.predict_proba(x[1000:1012]).argmax(axis=1))
    _check_additivity_and_top_feature(attr)


def test_attributions_add_up_when_the_model_scores_a_row_differently_in_a_batch(
    one_feature_model,
):
    """Dynamic int8 scales activations per batch; predictions must be f(x) of the row alone."""
    model, x = one_feature_model

    def batch_dependent(rows: np.ndarray) -> np.ndarray:
        scale = 1.0 + 0.05 * np.abs(rows).max()  # like a per-batch activation scale
        return model.predict_proba(rows) * scale

    attr = ShapExplainer(batch_dependent, x[:500], NAMES, ExplainBudget(max_rows=6)).explain(
        x[1000:1006]
    )
    alone = np.array(
        [
            batch_dependent(x[i : i + 1])[0, o]
            for i, o in zip(range(1000, 1006), attr.outputs, strict=True)
        ]
    )
    np.testing.assert_allclose(attr.predictions, alone)
    np.testing.assert_allclose(
        attr.values.sum(axis=1) + attr.base_values, attr.predictions, atol=1e-6
    )


def test_onnx_model_through_the_edge_runtime(one_feature_model):
    """The same classifier as an ONNX graph scored by edge_agent's OnnxRuntime."""
    from onnx import TensorProto, helper, numpy_helper

    from edge_agent.core.manifest import Signature, TensorSpec
    from edge_agent.runtime.onnx import OnnxRuntime

    model, x = one_feature_model
    w = np.column_stack((-model.coef_[0], model.coef_[0])).astype(np.float32)  # 2-class softmax
    b = np.array([-model.intercept_[0], model.intercept_[0]], dtype=np.float32) / 2
    w = w / 2
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["z0"]),
            helper.make_node("Add", ["z0", "b"], ["z"]),
            helper.make_node("Softmax", ["z"], ["probs"], axis=1),
        ],
        "lr",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 6])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [None, 2])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    signature = Signature(
        inputs=(TensorSpec(name="x", runtime_name="x", shape=(-1, 6)),),
        outputs=(TensorSpec(name="probs", runtime_name="probs", shape=(-1, 2)),),
    )
    loaded = OnnxRuntime(threads=1).load(proto.SerializeToString(), signature)
    predict = runtime_predict(loaded, "x", "probs")
    np.testing.assert_allclose(predict(x[:20]), model.predict_proba(x[:20]), atol=1e-5)
    attr = ShapExplainer(predict, x[:500], NAMES, ExplainBudget(max_rows=8)).explain(
        x[1000:1008], output=1
    )
    assert set(attr.outputs) == {1}
    np.testing.assert_allclose(
        attr.values.sum(axis=1) + attr.base_values, attr.predictions, atol=1e-5
    )
    means = attr.mean_abs()
    assert max(means, key=means.__getitem__) == "f2"


def test_attribution_drift_signals_a_changed_ranking():
    reference = {"a": 0.5, "b": 0.3, "c": 0.1, "d": 0.05, "e": 0.01}
    same = attribution_drift(reference, {k: 2 * v for k, v in reference.items()}, k=2)
    assert same.spearman == pytest.approx(1.0) and same.top_k_overlap == 1.0
    moved = attribution_drift(reference, {"a": 0.01, "b": 0.3, "c": 0.1, "d": 0.6, "e": 0.02}, k=2)
    assert moved.top_k_overlap == 0.5
    assert moved.entered_top_k == ("d",) and moved.left_top_k == ("a",)
    assert moved.spearman < 0.5
