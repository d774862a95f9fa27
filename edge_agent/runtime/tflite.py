"""LiteRT (ai-edge-litert) behind the Runtime port.

Full-int8 models (int8 inputs and outputs, as Coral-style targets need) are
quantized and dequantized at the boundary with each tensor's own scale and
zero point, so callers always pass and get float32. A model whose batch
dimension is fixed (converters often pin it to 1) is resized to the batch
when the interpreter accepts that and the outputs come back with the batch's
rows; otherwise it scores the batch row by row.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_agent.errors import PackageError, RuntimeUnavailable
from edge_agent.runtime.base import dequantize, quantize

if TYPE_CHECKING:
    from edge_agent.core.device_manifest import AnySignature, AnyTensorSpec


class TfliteModel:
    def __init__(self, interpreter: Any, signature: AnySignature) -> None:
        self.signature = signature
        self._interp = interpreter
        by_name = {d["name"]: d for d in interpreter.get_input_details()}
        out_by_name = {d["name"]: d for d in interpreter.get_output_details()}
        try:
            self._inputs = [(s, by_name[s.runtime_name]) for s in signature.inputs]
            self._outputs = [(s, out_by_name[s.runtime_name]) for s in signature.outputs]
        except KeyError as exc:
            raise PackageError(
                "format", f"tensor {exc} named in the manifest is not in the model"
            ) from exc
        self._fixed_batch = all(d["shape_signature"][0] != -1 for _, d in self._inputs)
        self._model_batch = int(self._inputs[0][1]["shape"][0])
        self._batch = self._model_batch
        self._resizable = True
        self._lock = threading.Lock()  # an Interpreter is not safe to share between threads

    def _set_batch(self, batch: int, force: bool = False) -> None:
        if batch == self._batch and not force:
            return
        for _, detail in self._inputs:
            shape = list(detail["shape"])
            shape[0] = batch
            self._interp.resize_tensor_input(detail["index"], shape)
        self._interp.allocate_tensors()
        self._batch = batch

    def _run(self, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        for spec, detail in self._inputs:
            value = inputs[spec.name]
            if spec.quantization is not None:
                q = spec.quantization
                value = quantize(value, q.scale, q.zero_point, spec.model_dtype)
            elif spec.model_dtype != spec.dtype:  # int64 ids into a model that takes int32
                value = value.astype(spec.model_dtype)
            self._interp.set_tensor(detail["index"], value)
        self._interp.invoke()
        outs = []
        for spec, detail in self._outputs:
            value = self._interp.get_tensor(detail["index"])
            outs.append(_to_float(spec, value))
        return outs

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:
            return self._predict(inputs)

    def _predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch = next(iter(inputs.values())).shape[0]
        if not self._fixed_batch:
            self._set_batch(batch)
            results = self._run(inputs)
        elif batch == self._model_batch:
            self._set_batch(batch)
            results = self._run(inputs)
        elif self._resizable and (resized := self._run_resized(inputs, batch)) is not None:
            results = resized
        else:
            rows = [self._run({k: v[i : i + 1] for k, v in inputs.items()}) for i in range(batch)]
            results = [np.concatenate(parts) for parts in zip(*rows, strict=True)]
        return {spec.name: value for (spec, _), value in zip(self._outputs, results, strict=True)}

    def _run_resized(self, inputs: Mapping[str, np.ndarray], batch: int) -> list[np.ndarray] | None:
        try:
            self._set_batch(batch)
            results = self._run(inputs)
        except (RuntimeError, ValueError):
            results = None
        if results is None or any(r.shape[:1] != (batch,) for r in results):
            self._resizable = False
            self._set_batch(self._model_batch, force=True)
            return None
        return results


def _to_float(spec: AnyTensorSpec, value: np.ndarray) -> np.ndarray:
    if spec.quantization is not None:
        return dequantize(value, spec.quantization.scale, spec.quantization.zero_point)
    if type(value) is np.ndarray and value.dtype is _FLOAT32:
        return value  # get_tensor returns a copy already
    return np.array(value, dtype=np.float32)


_FLOAT32 = np.dtype(np.float32)


class TfliteRuntime:
    name = "litert"

    def __init__(self, threads: int = 0) -> None:
        self.threads = threads

    def load(self, model_bytes: bytes, signature: AnySignature) -> TfliteModel:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:
            raise RuntimeUnavailable("ai-edge-litert is not installed") from exc
        try:
            interpreter = Interpreter(model_content=model_bytes, num_threads=self.threads or None)
            interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise PackageError("format", f"LiteRT cannot load the model: {exc}") from exc
        return TfliteModel(interpreter, signature)
