"""onnxruntime behind the Runtime port."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_agent.errors import PackageError, RuntimeUnavailable

if TYPE_CHECKING:
    from edge_agent.core.device_manifest import AnySignature

_FLOAT32 = np.dtype(np.float32)


class OnnxModel:
    def __init__(self, session: Any, signature: AnySignature) -> None:
        self.signature = signature
        self._session = session
        self._input_names = [(s.name, s.runtime_name) for s in signature.inputs]
        self._output_names = [s.runtime_name for s in signature.outputs]
        self._public_outputs = [s.name for s in signature.outputs]

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {runtime: inputs[public] for public, runtime in self._input_names}
        results = self._session.run(self._output_names, feed)
        return {
            name: value
            if type(value) is np.ndarray and value.dtype is _FLOAT32
            # onnxruntime's float32 arrays carry numpy's one float32 dtype: no conversion
            else np.asarray(value, dtype=np.float32)
            for name, value in zip(self._public_outputs, results, strict=True)
        }


class OnnxRuntime:
    """Loads ONNX models with the first available of the requested execution providers."""

    name = "onnxruntime"

    def __init__(self, threads: int = 0, providers: Sequence[str] = ()) -> None:
        self.threads = threads
        self.providers = tuple(providers)

    def load(self, model_bytes: bytes, signature: AnySignature) -> OnnxModel:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise RuntimeUnavailable("onnxruntime is not installed") from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        available = set(ort.get_available_providers())
        providers = [p for p in self.providers if p in available] or ["CPUExecutionProvider"]
        try:
            session = ort.InferenceSession(model_bytes, options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise PackageError("format", f"onnxruntime cannot load the model: {exc}") from exc
        return OnnxModel(session, signature)
