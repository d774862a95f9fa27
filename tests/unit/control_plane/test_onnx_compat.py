"""cap_onnx: a model an older onnxruntime loads, the graph changed only where it must."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from control_plane.compiler.onnx_compat import cap_onnx, opsets_of
from control_plane.errors import CompileError

CAPS = {"": 19, "ai.onnx.ml": 3}


def _model(nodes: list[onnx.NodeProto], opset: int, ir: int = 10, extra: int = 0) -> bytes:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", "b"])],
        initializer=[
            numpy_helper.from_array(np.array([4, 1], dtype=np.int64), "shape"),
            numpy_helper.from_array(np.arange(8, dtype=np.float32).reshape(4, 2), "w"),
        ],
    )
    imports = [helper.make_opsetid("", opset), helper.make_opsetid("ai.onnx.ml", 5)]
    imports += [helper.make_opsetid(f"unused.{i}", 1) for i in range(extra)]
    model = helper.make_model(graph, opset_imports=imports)
    model.ir_version = ir
    return model.SerializeToString()


def _run(data: bytes) -> np.ndarray:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    out: np.ndarray = ort.InferenceSession(data).run(None, {"x": x})[0]
    return out


def test_unused_domains_dropped_and_unchanged_ops_relabelled() -> None:
    data = _model([helper.make_node("MatMul", ["x", "w"], ["y"])], opset=21, extra=2)
    capped = cap_onnx(data, 9, CAPS)
    assert opsets_of(capped) == (9, {"": 19})  # MatMul is the same op at 19 and 21
    np.testing.assert_array_equal(_run(capped), _run(data))
    assert cap_onnx(capped, 9, CAPS) == capped  # already fits: returned as is


def test_an_op_that_changed_goes_through_the_version_converter() -> None:
    # Reshape has a new version at opset 21 (and 19): lowering it needs the converter
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"]),
        helper.make_node("Reshape", ["m", "shape"], ["y"]),
    ]
    data = _model(nodes, opset=21)
    capped = cap_onnx(data, 9, {"": 14})
    assert opsets_of(capped) == (9, {"": 14})
    np.testing.assert_array_equal(_run(capped), _run(data))


def test_types_the_older_ir_lacks_are_refused() -> None:
    data = onnx.load_from_string(_model([helper.make_node("MatMul", ["x", "w"], ["y"])], 21))
    data.graph.initializer.append(
        helper.make_tensor("q", TensorProto.INT4, [2], [1, 2])  # 4-bit: IR 10 only
    )
    with pytest.raises(CompileError, match=r"INT4.*ONNX IR 9 lacks"):
        cap_onnx(data.SerializeToString(), 9, CAPS)


def test_a_used_domain_op_defined_differently_is_refused() -> None:
    node = helper.make_node(
        "TreeEnsemble",  # ai.onnx.ml opset 5 only
        ["x"],
        ["y"],
        domain="ai.onnx.ml",
        nodes_splits=numpy_helper.from_array(np.array([0.5], dtype=np.float32)),
        nodes_featureids=[0],
        nodes_modes=numpy_helper.from_array(np.array([0], dtype=np.uint8)),
        nodes_truenodeids=[0],
        nodes_falsenodeids=[1],
        nodes_trueleafs=[1],
        nodes_falseleafs=[1],
        leaf_targetids=[0, 0],
        leaf_weights=numpy_helper.from_array(np.array([1.0, 2.0], dtype=np.float32)),
        tree_roots=[0],
    )
    with pytest.raises(CompileError, match=r"ai.onnx.ml opset 5.*TreeEnsemble"):
        cap_onnx(_model([node], opset=19), 9, CAPS)
