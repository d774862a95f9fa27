"""ONNX -> torch for the TFLite path: simplify, convert with onnx2torch, fold shape inputs.

onnx2torch keeps the shape operands of Reshape, Expand and Slice as tensors and
reads their values at run time (``torch.Size(shape)``); torch.export, which
litert-torch runs, cannot trace that ("data-dependent expression"). After the
graph is simplified at the fixed shape TFLite is converted for, those operands
are constants: this pass replaces each such call with one that takes them as
Python values.
"""

from __future__ import annotations

from typing import Any


def _reshape(x: Any, shape: tuple[int, ...]) -> Any:
    dims = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return x.reshape(dims)


def _expand(x: Any, shape: tuple[int, ...]) -> Any:
    import torch

    return x.expand(torch.broadcast_shapes(tuple(x.shape), shape))  # type: ignore[no-untyped-call]


def _slice(
    x: Any,
    starts: tuple[int, ...],
    ends: tuple[int, ...],
    axes: tuple[int, ...] | None,
    steps: tuple[int, ...] | None,
) -> Any:
    index: list[slice] = [slice(None)] * x.dim()
    for i, (start, end) in enumerate(zip(starts, ends, strict=True)):
        axis = axes[i] if axes is not None else i
        step = steps[i] if steps is not None else 1
        size = x.shape[axis]
        start = max(min(start, size), -size)
        end = max(min(end, size), -size - 1)
        index[axis] = slice(start, end, step)
    return x[tuple(index)]


def _split(x: Any, sizes: tuple[int, ...], axis: int) -> Any:
    return x.split(list(sizes), dim=axis)


def _constant(module: Any, node: Any) -> tuple[int, ...] | None:
    import torch

    if not isinstance(node, torch.fx.Node) or node.op != "get_attr":
        return None
    value = module
    for part in str(node.target).split("."):
        value = getattr(value, part)
    if not isinstance(value, torch.Tensor) or value.dtype.is_floating_point:
        return None
    return tuple(int(v) for v in value.reshape(-1).tolist())


def fold_shape_operands(module: Any) -> int:
    """Replace Reshape/Expand/Slice/Split calls whose shape operands are constants; the count."""
    import torch

    graph: torch.fx.Graph = module.graph
    folded = 0
    for node in list(graph.nodes):
        if node.op != "call_module":
            continue
        sub = module.get_submodule(node.target)
        kind = type(sub).__name__
        if kind not in ("OnnxReshape", "OnnxExpand", "OnnxSlice", "OnnxSplit13") or node.kwargs:
            continue
        if kind == "OnnxSplit13" and len(node.args) < 2:
            continue
        operands = [_constant(module, arg) for arg in node.args[1:]]
        if any(op is None for op in operands):
            continue
        with graph.inserting_before(node):
            x = node.args[0]
            if kind == "OnnxReshape":
                new = graph.call_function(_reshape, (x, operands[0]))
            elif kind == "OnnxExpand":
                new = graph.call_function(_expand, (x, operands[0]))
            elif kind == "OnnxSplit13":
                new = graph.call_function(_split, (x, operands[0], int(sub.axis)))
            else:
                padded = [*operands, None, None][2:4]
                new = graph.call_function(_slice, (x, operands[0], operands[1], *padded))
        node.replace_all_uses_with(new)
        graph.erase_node(node)
        folded += 1
    if folded:
        graph.lint()
        module.recompile()
    return folded


REDUCE_18 = {
    "ReduceMean",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceSumSquare",
}


def down_to_opset17(model: Any) -> Any:
    """An opset-18 graph as opset 17, for onnx2torch (which knows opset <= 17 versions).

    onnx's version converter has no 18 -> 17 adapter for Split; after the graph is
    simplified at fixed shapes the two changes that matter can be undone by hand:
    Split's ``num_outputs`` becomes explicit sizes, and the Reduce ops' constant
    ``axes`` input becomes the attribute again. Returns None when another op blocks it.
    """
    import onnx
    from onnx import helper, numpy_helper

    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {
        v.name: [
            d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim
        ]
        for v in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)
    }
    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    for node in model.graph.node:
        attrs = {a.name: a for a in node.attribute}
        if node.op_type == "Split" and "num_outputs" in attrs:
            axis = attrs["axis"].i if "axis" in attrs else 0
            shape = shapes.get(node.input[0])
            if not shape or shape[axis] < 0:
                return None
            parts = attrs["num_outputs"].i
            size = -(-shape[axis] // parts)
            sizes = [min(size, shape[axis] - i * size) for i in range(parts)]
            name = f"{node.name or node.output[0]}_split_sizes"
            model.graph.initializer.append(numpy_helper.from_array(np_int64(sizes), name))
            node.input.append(name)
            node.attribute.remove(attrs["num_outputs"])
        elif node.op_type in REDUCE_18 and len(node.input) > 1 and node.input[1]:
            axes = consts.get(node.input[1])
            if axes is None:
                return None
            del node.input[1:]
            node.attribute.append(helper.make_attribute("axes", [int(a) for a in axes.reshape(-1)]))
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = 17
    return model


def np_int64(values: list[int]) -> Any:
    import numpy as np

    return np.asarray(values, dtype=np.int64)


def normalise_for_onnx2torch(model: Any) -> None:
    """Small rewrites of equivalent forms onnx2torch refuses (in place).

    - omitted optional inputs ("") at the end of a node's inputs are dropped (its
      Clip converter looks them up and fails);
    - Reshape's ``allowzero=1`` is dropped when the constant shape holds no 0 (it
      then means the same as the default);
    - GreaterOrEqual / LessOrEqual (opset 16 versions, which it does not know; the
      mask arithmetic of exported transformers) become Not(Less) / Not(Greater).
    """
    from onnx import helper, numpy_helper

    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    nodes = []
    for node in model.graph.node:
        flipped = {"GreaterOrEqual": "Less", "LessOrEqual": "Greater"}.get(node.op_type)
        if flipped is None:
            nodes.append(node)
            continue
        base = node.name or node.output[0]
        inner = f"{base}_{flipped.lower()}"
        nodes.append(helper.make_node(flipped, list(node.input), [inner], name=inner))
        nodes.append(helper.make_node("Not", [inner], list(node.output), name=base))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    for node in model.graph.node:
        while node.input and node.input[-1] == "":
            node.input.pop()
        if node.op_type == "Reshape":
            for attr in list(node.attribute):
                shape = consts.get(node.input[1]) if len(node.input) > 1 else None
                if attr.name == "allowzero" and shape is not None and 0 not in shape.tolist():
                    node.attribute.remove(attr)
