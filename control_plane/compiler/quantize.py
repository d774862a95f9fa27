"""ONNX candidates: fp32, fp16, dynamic int8, weight-only int8 and static (QDQ) int8.

- ``dynamic_int8``: onnxruntime's ``quantize_dynamic`` as it comes (per-tensor
  weights), the floor every other recipe is compared with.
- ``dynamic_int8_per_channel``: the same with one scale per output channel of
  each weight: on transformers the cheap big win (cosine 0.966 -> 0.993 on a
  BERT-family encoder, see docs/compiler.md).
- ``weight_only_int8``: weights stored as int8 with a per-channel scale and a
  DequantizeLinear in front of each MatMul/Gemm/Gather: a quarter of the size,
  float arithmetic (close to fp32 fidelity, fp32 speed).
- ``mixed_int8``: see :mod:`control_plane.compiler.mixed`.

Wraps onnxruntime.quantization. Static int8 runs onnxruntime's pre-processing
(symbolic shape inference + graph optimisation) first, then calibrates with
MinMax on the calibration set, quantizing activations to uint8 and weights to
int8 per channel (U8S8, the fast path on x86 with or without VNNI).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from control_plane.compiler.sources import quiet_stdout
from control_plane.errors import CompileError

logger = logging.getLogger(__name__)

CALIBRATION_BATCH = 32


class _Reader:
    """onnxruntime's CalibrationDataReader over in-memory arrays, in fixed batches."""

    def __init__(
        self, data: Mapping[str, np.ndarray], batch: int = CALIBRATION_BATCH, fixed: bool = False
    ) -> None:
        rows = next(iter(data.values())).shape[0]
        if fixed:  # a fixed-batch model takes whole batches only
            if rows < batch:
                data = {k: np.resize(v, (batch, *v.shape[1:])) for k, v in data.items()}
                rows = batch
            rows -= rows % batch
        self._batches: Iterator[dict[str, np.ndarray]] = iter(
            [{k: v[i : i + batch] for k, v in data.items()} for i in range(0, rows, batch)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def build_onnx(
    fp32: bytes,
    recipe: str,
    calibration: Mapping[str, np.ndarray],
    batch: int | None = None,
    exclude: Sequence[str] = (),
) -> bytes:
    """The model bytes of one ONNX candidate; ``exclude`` names nodes kept in float."""
    if recipe == "fp32":
        return fp32
    try:
        with quiet_stdout():
            if recipe == "fp16":
                return _fp16(fp32)
            if recipe == "weight_only_int8":
                return weight_only(fp32)
            with tempfile.TemporaryDirectory() as tmp:
                src, out = Path(tmp) / "fp32.onnx", Path(tmp) / "out.onnx"
                src.write_bytes(fp32)
                if recipe == "dynamic_int8":
                    _dynamic(src, out, per_channel=False)
                elif recipe in ("dynamic_int8_per_channel", "mixed_int8"):
                    _dynamic(src, out, per_channel=True, exclude=exclude)
                elif recipe == "static_int8":
                    _static(src, out, calibration, Path(tmp), batch)
                else:
                    raise CompileError(f"unknown ONNX recipe {recipe!r}")
                return out.read_bytes()
    except CompileError:
        raise
    except Exception as exc:  # onnxruntime.quantization raises plain exceptions
        raise CompileError(f"onnx/{recipe}: quantization failed: {exc}") from exc


def _fp16(fp32: bytes) -> bytes:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load_model_from_string(fp32), keep_io_types=True)
    return bytes(model.SerializeToString())


def _dynamic(src: Path, out: Path, per_channel: bool, exclude: Sequence[str] = ()) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(src),
        str(out),
        weight_type=QuantType.QInt8,
        per_channel=per_channel,
        nodes_to_exclude=list(exclude) or None,
        # the fused graph's contrib ops (Attention, SkipLayerNormalization) have no
        # ONNX type inference: their float outputs are declared float
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )


FUSED_OPS = ("Attention", "SkipLayerNormalization", "EmbedLayerNormalization", "BiasGelu")


def fuse_transformer(fp32: bytes) -> tuple[bytes, dict[str, int]] | None:
    """The graph with onnxruntime's transformer fusions (Attention, SkipLayerNormalization,
    BiasGelu, EmbedLayerNormalization), or None when no attention block was recognised.

    Quantizing the fused graph turns each attention block into one QAttention and keeps
    the bias/GELU and residual/LayerNorm arithmetic in fused float kernels; the heads
    and hidden size are read from the graph.
    """
    import onnx
    from onnxruntime.transformers.optimizer import optimize_model

    shape = attention_shape(onnx.load_model_from_string(fp32))
    if shape is None:
        return None
    heads, hidden = shape
    with tempfile.TemporaryDirectory() as tmp, quiet_stdout():
        src, out = Path(tmp) / "fp32.onnx", Path(tmp) / "fused.onnx"
        src.write_bytes(fp32)
        try:
            optimized = optimize_model(
                str(src), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=1
            )
        except Exception as exc:  # a graph the optimizer's patterns do not take
            logger.info("transformer fusion not applied: %s", exc)
            return None
        stats = {
            op: int(count)
            for op, count in optimized.get_fused_operator_statistics().items()
            if op in FUSED_OPS and count
        }
        if not stats.get("Attention"):
            return None
        optimized.save_model_to_file(str(out))
        return out.read_bytes(), stats


def _constants(model: Any) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    found = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            found[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return found


def attention_shape(model: Any) -> tuple[int, int] | None:
    """(heads, hidden size) of a BERT-style graph: the hidden size is the first
    LayerNormalization's width, the heads that width over the head size of a 4-d
    Reshape target [batch, tokens, heads or -1, head size]."""
    constants = _constants(model)
    widths = [
        int(constants[n.input[1]].size)
        for n in model.graph.node
        if n.op_type == "LayerNormalization" and len(n.input) > 1 and n.input[1] in constants
    ]
    if not widths:
        return None
    hidden = widths[0]
    producers = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2:
            continue
        target: list[int | None] = []
        if node.input[1] in constants:
            target = [int(v) for v in constants[node.input[1]].reshape(-1)]
        elif node.input[1] in producers and producers[node.input[1]].op_type == "Concat":
            for name in producers[node.input[1]].input:
                value = constants.get(name)
                target.extend(
                    [None] if value is None or value.size != 1 else [int(value.reshape(-1)[0])]
                )
        if len(target) != 4 or not target[3] or target[3] <= 1 or hidden % target[3]:
            continue
        heads = hidden // target[3]
        if heads > 1 and target[2] in (heads, -1):  # [b, t, heads, d] or [b, t, -1, d]
            return heads, hidden
    return None


WEIGHT_ONLY_OPS = {"MatMul": 1, "Gemm": 1, "Gather": 0}  # op -> input whose weight is int8


def weight_only(fp32: bytes) -> bytes:
    """int8 weights with a per-channel scale and a DequantizeLinear feeding the op."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load_model_from_string(fp32)
    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    done: dict[str, str] = {}
    replaced: dict[str, int] = {}
    new_nodes = []
    for node in graph.node:
        slot = WEIGHT_ONLY_OPS.get(node.op_type)
        if slot is None or len(node.input) <= slot or node.input[slot] not in inits:
            continue
        if node.op_type == "Gather" and slot != 0:
            continue
        name = node.input[slot]
        weight = numpy_helper.to_array(inits[name])
        if weight.dtype != np.float32 or weight.ndim != 2 or weight.size < 1024:
            continue
        if name not in done:
            trans_b = node.op_type == "Gemm" and any(
                a.name == "transB" and a.i for a in node.attribute
            )
            # one scale per output channel: MatMul/Gemm B [K, N] -> axis 1 (transB: 0),
            # an embedding table [V, D] -> one per row (axis 0)
            axis = 0 if node.op_type == "Gather" or trans_b else 1
            reduce_axis = 1 - axis
            scale = np.abs(weight).max(axis=reduce_axis) / 127.0
            scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
            shaped = scale.reshape((-1, 1) if axis == 0 else (1, -1))
            q = np.clip(np.rint(weight / shaped), -127, 127).astype(np.int8)
            qname, sname, dname = f"{name}_int8", f"{name}_scale", f"{name}_dequantized"
            graph.initializer.append(numpy_helper.from_array(q, qname))
            graph.initializer.append(numpy_helper.from_array(scale, sname))
            new_nodes.append(
                helper.make_node(
                    "DequantizeLinear", [qname, sname], [dname], name=f"{name}_dq", axis=axis
                )
            )
            done[name] = dname
        node.input[slot] = done[name]
        replaced[name] = replaced.get(name, 0) + 1
    if not done:
        raise CompileError("onnx/weight_only_int8: no MatMul, Gemm or Gather weight to quantize")
    outputs = {o.name for o in graph.output}
    unused = {n for n in done if replaced[n] == uses.get(n, 0) and n not in outputs}
    kept = [init for init in graph.initializer if init.name not in unused]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend([*new_nodes, *nodes])
    return bytes(model.SerializeToString())


def _static(
    src: Path, out: Path, calibration: Mapping[str, np.ndarray], tmp: Path, batch: int | None
) -> None:
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = tmp / "pre.onnx"
    quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)
    quantize_static(
        str(pre),
        str(out),
        _Reader(calibration, batch or CALIBRATION_BATCH, fixed=batch is not None),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        extra_options={"CalibTensorRangeSymmetric": False},
    )
