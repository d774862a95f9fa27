"""TFLite candidates: fp32 via litert-torch, int8 via ai-edge-quantizer.

- ``fp32``: ``litert_torch.convert`` of the torch module (batch 1, as mobile
  targets score).
- ``dynamic_int8``: int8 weights, float activations (``dynamic_wi8_afp32``).
- ``mixed_int8``: the same with the most sensitive ops kept in float, see
  :mod:`control_plane.compiler.tflite_mixed`.
- ``static_int8``: full integer (``static_wi8_ai8``) calibrated on the
  calibration set (global min/max, see :func:`_quantize`): int8 weights,
  activations, inputs and outputs, what Coral-style accelerators take. The
  runtime quantizes at the boundary.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from control_plane.compiler.sources import quiet_stdout
from control_plane.errors import CompileError
from edge_agent.core.manifest import DType, Quantization, Signature, TensorSpec

logger = logging.getLogger(__name__)

CALIBRATION_ROWS = 256
_ORDER = re.compile(r"(\d+)$")


class TfliteBuilder:
    """Converts one torch module to float TFLite once, then derives each recipe from it."""

    def __init__(
        self,
        module: Any,
        input_names: list[str],
        output_names: list[str],
        input_dtypes: list[str] | None = None,
    ) -> None:
        self._module = module
        self._dtypes = input_dtypes or ["float32"] * len(input_names)
        self._inputs = input_names
        self._outputs = output_names
        self._float: bytes | None = None

    def float_model(self, sample: Mapping[str, np.ndarray]) -> bytes:
        if self._float is None:
            import torch

            args = tuple(
                torch.from_numpy(np.ascontiguousarray(sample[n][:1])) for n in self._inputs
            )
            try:
                with quiet_stdout():
                    import litert_torch  # its import alone prints C++ and torchao warnings

                    converted = litert_torch.convert(self._module, args)
                    self._float = bytes(converted.model_content())
            except CompileError:
                raise
            except Exception as exc:  # lowering failures name the op in their text
                raise CompileError(
                    f"tflite: litert-torch cannot convert the model: {_first_line(exc)}"
                ) from exc
        return self._float

    def build(
        self,
        recipe: str,
        calibration: Mapping[str, np.ndarray],
        exclude: Sequence[str] = (),
        ops: Mapping[str, str] | None = None,
    ) -> tuple[bytes, Signature]:
        """One recipe's model; ``mixed_int8`` keeps the ``exclude`` scopes in float."""
        float_bytes = self.float_model(calibration)
        try:
            with quiet_stdout():
                if recipe == "fp32":
                    model = float_bytes
                elif recipe == "dynamic_int8":
                    model = _quantize(float_bytes, "dynamic", calibration, self._inputs)
                elif recipe == "mixed_int8":
                    from ai_edge_quantizer import quantizer

                    from control_plane.compiler.tflite_mixed import mixed_recipe

                    q = quantizer.Quantizer(
                        bytearray(float_bytes), mixed_recipe(exclude, ops or {})
                    )
                    model = bytes(q.quantize(enable_progress_report=False).quantized_model)
                elif recipe == "static_int8":
                    model = _quantize(float_bytes, "static", calibration, self._inputs)
                else:
                    raise CompileError(f"unknown TFLite recipe {recipe!r}")
        except CompileError:
            raise
        except Exception as exc:  # ai-edge-quantizer raises ValueError/RuntimeError
            raise CompileError(f"tflite/{recipe}: quantization failed: {_first_line(exc)}") from exc
        return model, tflite_signature(model, self._inputs, self._outputs, self._dtypes)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _quantize(
    float_bytes: bytes, mode: str, calibration: Mapping[str, np.ndarray], names: list[str]
) -> bytes:
    from ai_edge_quantizer import quantizer, recipe

    if mode == "dynamic":
        q = quantizer.Quantizer(bytearray(float_bytes), recipe.dynamic_wi8_afp32())
        return bytes(q.quantize(enable_progress_report=False).quantized_model)
    from ai_edge_quantizer import calibrator, recipe_manager
    from ai_edge_quantizer.utils import qsv_utils

    static = recipe.static_wi8_ai8()
    signature_key, keys, dtypes = _signature_keys(float_bytes)
    rows = min(next(iter(calibration.values())).shape[0], CALIBRATION_ROWS)
    samples = [
        {
            key: calibration[name][i : i + 1].astype(dtype, copy=False)
            for key, name, dtype in zip(keys, names, dtypes, strict=True)
        }
        for i in range(rows)
    ]
    # Quantizer.calibrate merges each sample's min/max into a moving average
    # (0.95), so with batch-1 samples the ranges track a typical image, not the
    # calibration set, and larger activations clip: on the MobileNet-sized
    # benchmark net that cost 17 dB of output SNR (15 vs 32 dB) and 3 of 200
    # top-1 flips. The Calibrator with min_max_update keeps the set's range, as
    # onnxruntime's MinMax does for the ONNX recipe; size and speed are unchanged.
    manager = recipe_manager.RecipeManager()
    manager.load_quantization_recipe(static)
    calib = calibrator.Calibrator(
        bytearray(float_bytes), num_threads=1, qsv_update_func=qsv_utils.min_max_update
    )
    calib.calibrate({signature_key: samples}, manager)
    q = quantizer.Quantizer(bytearray(float_bytes), static)
    result = q.quantize(calib.get_model_qsvs(), enable_progress_report=False)
    return bytes(result.quantized_model)


def _signature_keys(model: bytes) -> tuple[str, list[str], list[Any]]:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=model)
    signatures = interp.get_signature_list()
    key = "serving_default" if "serving_default" in signatures else next(iter(signatures))
    keys = _ordered(signatures[key]["inputs"])
    details = interp.get_signature_runner(key).get_input_details()
    return key, keys, [np.dtype(details[k]["dtype"]) for k in keys]


def _ordered(keys: list[str]) -> list[str]:
    def position(key: str) -> int:
        match = _ORDER.search(key)
        return int(match.group(1)) if match else 0

    return sorted(keys, key=position)


def tflite_signature(
    model: bytes,
    input_names: list[str],
    output_names: list[str],
    input_dtypes: list[str] | None = None,
) -> Signature:
    """The manifest signature of a TFLite model: public names onto its tensors."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=model)
    signatures = interp.get_signature_list()
    key = "serving_default" if "serving_default" in signatures else next(iter(signatures))
    runner = interp.get_signature_runner(key)
    in_details = runner.get_input_details()
    out_details = runner.get_output_details()
    by_index_in = {d["index"]: d for d in interp.get_input_details()}
    by_index_out = {d["index"]: d for d in interp.get_output_details()}
    in_keys = _ordered(list(in_details))
    out_keys = _ordered(list(out_details))
    if len(in_keys) != len(input_names):
        raise CompileError(f"tflite: model has {len(in_keys)} inputs, expected {len(input_names)}")
    if len(out_keys) < len(output_names):
        output_names = output_names[: len(out_keys)]
    if len(out_keys) > len(output_names):
        output_names = [
            *output_names,
            *(f"output_{i}" for i in range(len(output_names), len(out_keys))),
        ]
    dtypes = input_dtypes or ["float32"] * len(input_names)
    inputs = tuple(
        _spec(public, by_index_in[in_details[k]["index"]], source)
        for public, k, source in zip(input_names, in_keys, dtypes, strict=True)
    )
    outputs = tuple(
        _spec(public, by_index_out[out_details[k]["index"]])
        for public, k in zip(output_names, out_keys, strict=True)
    )
    return Signature(inputs=inputs, outputs=outputs)


def _spec(public: str, detail: dict[str, Any], source: str = "float32") -> TensorSpec:
    dtype: DType = np.dtype(detail["dtype"]).name
    scale, zero_point = detail["quantization"]
    quant = Quantization(scale=float(scale), zero_point=int(zero_point)) if scale else None
    # the file may fix the batch at 1; the runtime then scores larger batches row by row
    shape = (-1, *(int(d) for d in detail["shape_signature"][1:]))
    # callers pass integer and boolean tensors (ids, masks) with the source model's dtype
    # (LiteRT takes int64 ids as int32: the runtime casts at the boundary), floats as float32
    integer = dtype in ("int32", "int64", "bool") or (dtype in ("int8", "uint8") and not quant)
    public_dtype = source if integer and source != "float32" else dtype if integer else "float32"
    return TensorSpec(
        name=public,
        runtime_name=detail["name"],
        dtype=public_dtype,  # type: ignore[arg-type]
        shape=shape,
        model_dtype=dtype,
        quantization=quant,
    )
