"""Mixed precision for TFLite: ai-edge-quantizer's per-op recipes keep sensitive ops in float.

The TFLite counterpart of :mod:`control_plane.compiler.mixed`: the weight ops of
the float model (FULLY_CONNECTED, EMBEDDING_LOOKUP) are ranked by the same local
sensitivity, read from one run of the float interpreter with every tensor kept
(``experimental_preserve_all_tensors``), and a trial keeps a prefix of them in
float by adding a ``no_quantize`` entry for each op's scope (its output tensor
names, as ai-edge-quantizer matches recipes) after ``dynamic_wi8_afp32``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from control_plane.compiler.mixed import SENSITIVITY_ROWS, WeightNode, _dynamic_int8

WEIGHT_OPS = {"FULLY_CONNECTED": 1, "EMBEDDING_LOOKUP": 1}  # op -> input holding the weight


def _op_name(code: Any) -> str:
    return str(getattr(code, "value", code))


def weight_ops(float_bytes: bytes) -> list[WeightNode]:
    """FULLY_CONNECTED and EMBEDDING_LOOKUP ops with a constant weight, by scope."""
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as fu

    model = fu.read_model(bytearray(float_bytes))
    graph = model.subgraphs[0]
    codes = [fu.TFL_OP_CODE_TO_NAME.get(c.builtinCode) for c in model.operatorCodes]
    found = []
    for op in graph.operators:
        code = codes[op.opcodeIndex]
        name = _op_name(code) if code is not None else ""
        slot = WEIGHT_OPS.get(name)
        if slot is None or len(op.inputs) <= slot:
            continue
        tensor = graph.tensors[op.inputs[slot]]
        data = model.buffers[tensor.buffer].data
        if data is None or len(data) == 0:
            continue
        weight = np.frombuffer(bytes(data), dtype=np.float32).reshape(tuple(tensor.shape))
        if weight.ndim != 2:
            continue
        scope = fu.get_op_scope(op, graph.tensors)
        if name == "FULLY_CONNECTED":  # [out, in]: the op computes x @ W.T
            found.append(WeightNode(scope, name, str(op.inputs[0]), weight.T.copy()))
        else:
            found.append(WeightNode(scope, name, "", weight.copy()))
    return found


def sensitivities(
    float_bytes: bytes,
    inputs: Mapping[str, np.ndarray],
    names: Sequence[str],
    dtypes: Sequence[Any],
) -> list[tuple[WeightNode, float]]:
    """Each weight op with its relative output error when int8, most sensitive first."""
    from ai_edge_litert.interpreter import Interpreter

    from control_plane.compiler.tflite import _signature_keys

    nodes = weight_ops(float_bytes)
    if not nodes:
        return []
    interp = Interpreter(model_content=float_bytes, experimental_preserve_all_tensors=True)
    key, keys, _ = _signature_keys(float_bytes)
    runner_inputs = interp.get_signature_runner(key).get_input_details()
    interp.allocate_tensors()
    rows = min(next(iter(inputs.values())).shape[0], SENSITIVITY_ROWS)
    wanted = {int(n.activation) for n in nodes if n.activation}
    collected: dict[int, list[np.ndarray]] = {i: [] for i in wanted}
    batch = int(interp.get_input_details()[0]["shape"][0]) or 1
    for start in range(0, rows - rows % batch or batch, batch):
        for sig_key, name, dtype in zip(keys, names, dtypes, strict=True):
            value = inputs[name][start : start + batch].astype(dtype, copy=False)
            interp.set_tensor(runner_inputs[sig_key]["index"], value)
        interp.invoke()
        for index in wanted:
            collected[index].append(np.array(interp.get_tensor(index), dtype=np.float64))
    ranked = []
    for node in nodes:
        w = node.weight.astype(np.float64)
        if not node.activation:  # an embedding table: int8 per row, as the recipe does
            scale = np.abs(w).max(axis=1, keepdims=True) / 127.0
            scale = np.where(scale > 0, scale, 1.0)
            gap = float(np.linalg.norm(np.clip(np.rint(w / scale), -127, 127) * scale - w))
            ranked.append((node, gap / (float(np.linalg.norm(w)) or 1e-12)))
            continue
        x = np.concatenate(collected[int(node.activation)])
        x = x.reshape(-1, x.shape[-1])
        exact = x @ w
        norm = float(np.linalg.norm(exact)) or 1e-12
        ranked.append((node, float(np.linalg.norm(_dynamic_int8(x, w) - exact)) / norm))
    ranked.sort(key=lambda item: -item[1])
    return ranked


def mixed_recipe(exclude: Sequence[str], ops: Mapping[str, str]) -> list[dict[str, Any]]:
    """``dynamic_wi8_afp32`` with each excluded scope kept in float (later entries win)."""
    from ai_edge_quantizer import recipe

    entries: list[dict[str, Any]] = list(recipe.dynamic_wi8_afp32())
    for scope in exclude:
        entries.append(
            {
                "regex": f"^{re.escape(scope)}$",
                "operation": ops.get(scope, "*"),
                "algorithm_key": "no_quantize",
            }
        )
    return entries
