"""ONNX -> torch for the TFLite path: simplify, convert with onnx2torch, fold shape inputs.

onnx2torch keeps the shape operands of Reshape, Expand and Slice as tensors and
reads their values at run time (``torch.Size(shape)``); torch.export, which
litert-torch runs, cannot trace that ("data-dependent expression"). After the
graph is simplified at the fixed shape TFLite is converted for, those operands
are constants: this pass replaces each such call with one that takes them as
Python values.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from control_plane.compiler.sources import quiet_stdout
from control_plane.errors import CompileError

logger = logging.getLogger(__name__)

ONNX2TORCH_OPSET = 17


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


def _import_onnx2torch() -> None:
    """Import onnx2torch, which imports torchvision only for NonMaxSuppression and RoiAlign.

    PyPI's torchvision does not load beside the CPU torch wheel, so when it is
    missing a stub whose use fails with a message naming the op stands in while
    onnx2torch is imported, and leaves ``sys.modules`` afterwards: other libraries
    in the process (transformers probes ``find_spec("torchvision")``) must not see it.
    """
    if "onnx2torch" in sys.modules:
        return
    try:
        import torchvision  # noqa: F401
    except Exception:
        stub = types.ModuleType("torchvision")
        ops = types.ModuleType("torchvision.ops")

        def _missing(*_: Any, **__: Any) -> Any:
            raise CompileError("op NonMaxSuppression/RoiAlign needs torchvision, not installed")

        ops.nms = ops.box_convert = ops.roi_align = _missing  # type: ignore[attr-defined]
        stub.ops = ops  # type: ignore[attr-defined]
        sys.modules["torchvision"] = stub
        sys.modules["torchvision.ops"] = ops
        try:
            import onnx2torch  # noqa: F401
        finally:
            for name, module in (("torchvision", stub), ("torchvision.ops", ops)):
                if sys.modules.get(name) is module:
                    del sys.modules[name]


def simplify_onnx(onnx_bytes: bytes, shapes: Mapping[str, tuple[int, ...]] | None = None) -> bytes:
    """Fold constants and simplify the graph (onnxslim), so mask arithmetic such as
    GreaterOrEqual/Where on constant shapes and Constant-fed Clip bounds become plain
    initializers before ONNX -> torch conversion; the input unchanged if onnxslim fails."""
    import onnx

    try:
        import onnxslim
    except ImportError:  # optional: conversion is still attempted on the graph as given
        return onnx_bytes
    model = onnx.load_model_from_string(onnx_bytes)
    fixed = [f"{name}:{','.join(str(d) for d in shape)}" for name, shape in (shapes or {}).items()]
    try:
        with quiet_stdout():
            slimmed = onnxslim.slim(model, input_shapes=fixed or None)
        if slimmed is not None:
            model = slimmed
    except Exception as exc:  # onnxslim raises plain exceptions on graphs it cannot handle
        logger.debug("onnxslim could not simplify the graph: %s", exc)
    opsets = {o.domain: o.version for o in model.opset_import}
    if opsets.get("", opsets.get("ai.onnx", 0)) > ONNX2TORCH_OPSET:
        try:  # onnx2torch knows the opset <= 17 versions of Split, Reduce*, ...
            model = onnx.version_converter.convert_version(model, ONNX2TORCH_OPSET)
        except Exception as exc:  # no adapter (Split 18 -> 17): undo the opset-18 changes by hand
            logger.debug("onnx cannot convert the graph to opset 17 (%s); by hand", exc)
            model = down_to_opset17(model) or model
    return bytes(model.SerializeToString())


def _failing_node(exc: BaseException) -> str | None:
    """The ONNX node onnx2torch was converting when it failed (from its frame)."""
    tb = exc.__traceback__
    node = None
    while tb is not None:
        candidate = tb.tb_frame.f_locals.get("onnx_node")
        if candidate is not None:
            node = candidate
        tb = tb.tb_next
    if node is None:
        return None
    name = getattr(node, "name", "") or getattr(node, "unique_name", "?")
    return f"{getattr(node, 'operation_type', '?')} node {name!r}"


def onnx_to_torch(
    onnx_bytes: bytes, path: Path, shapes: Mapping[str, tuple[int, ...]] | None = None
) -> Any:
    import re

    import onnx

    _import_onnx2torch()
    from onnx2torch import convert

    model = onnx.load_model_from_string(simplify_onnx(onnx_bytes, shapes))
    normalise_for_onnx2torch(model)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            converted = convert(model).eval()
        fold_shape_operands(converted)
        return converted
    except NotImplementedError as exc:
        match = re.search(r"operation_type='([^']+)'.*?version=(\d+)", str(exc))
        node = _failing_node(exc)
        op = f"{match.group(1)} (opset {match.group(2)})" if match else str(exc)
        where = f" at {node}" if node else ""
        raise CompileError(
            f"model {path}: op {op}{where} cannot be converted for TFLite targets (onnx2torch); "
            "give the .pt2 or the module (--factory) instead of the ONNX file"
        ) from exc
    except Exception as exc:
        node = _failing_node(exc)
        where = f" at {node}" if node else ""
        raise CompileError(
            f"model {path}: cannot convert ONNX to torch for TFLite{where}: {exc}"
        ) from exc
