"""The runtime port: load a model file, predict on named arrays."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from edge_agent.core.device_manifest import AnySignature


class LoadedModel(Protocol):
    signature: AnySignature

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Score already-validated inputs (public names, declared dtypes)."""
        ...


class Runtime(Protocol):
    name: str

    def load(self, model_bytes: bytes, signature: AnySignature) -> LoadedModel: ...


def quantize(array: np.ndarray, scale: float, zero_point: int, dtype: str) -> np.ndarray:
    info = np.iinfo(np.dtype(dtype))
    q = np.rint(array / scale) + zero_point
    clipped: np.ndarray = np.clip(q, info.min, info.max).astype(dtype)
    return clipped


def dequantize(array: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return ((array.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)).astype(
        np.float32
    )
