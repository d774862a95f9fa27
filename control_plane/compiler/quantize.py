"""ONNX candidates: fp32, fp16, dynamic int8 and static (calibrated, QDQ) int8.

Wraps onnxruntime.quantization. Static int8 runs onnxruntime's pre-processing
(symbolic shape inference + graph optimisation) first, then calibrates with
MinMax on the calibration set, quantizing activations to uint8 and weights to
int8 per channel (U8S8, the fast path on x86 with or without VNNI).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from control_plane.compiler.sources import quiet_stdout
from control_plane.errors import CompileError

logger = logging.getLogger(__name__)

CALIBRATION_BATCH = 32


class _Reader:
    """onnxruntime's CalibrationDataReader over in-memory arrays, in fixed batches."""

    def __init__(self, data: Mapping[str, np.ndarray], batch: int = CALIBRATION_BATCH) -> None:
        rows = next(iter(data.values())).shape[0]
        self._batches: Iterator[dict[str, np.ndarray]] = iter(
            [{k: v[i : i + batch] for k, v in data.items()} for i in range(0, rows, batch)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def build_onnx(fp32: bytes, recipe: str, calibration: Mapping[str, np.ndarray]) -> bytes:
    """The model bytes of one ONNX candidate."""
    if recipe == "fp32":
        return fp32
    try:
        with quiet_stdout():
            if recipe == "fp16":
                return _fp16(fp32)
            with tempfile.TemporaryDirectory() as tmp:
                src, out = Path(tmp) / "fp32.onnx", Path(tmp) / "out.onnx"
                src.write_bytes(fp32)
                if recipe == "dynamic_int8":
                    _dynamic(src, out)
                elif recipe == "static_int8":
                    _static(src, out, calibration, Path(tmp))
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


def _dynamic(src: Path, out: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(out), weight_type=QuantType.QInt8, per_channel=False)


def _static(src: Path, out: Path, calibration: Mapping[str, np.ndarray], tmp: Path) -> None:
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
        _Reader(calibration),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        extra_options={"CalibTensorRangeSymmetric": False},
    )
