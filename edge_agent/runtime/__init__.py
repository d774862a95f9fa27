"""The on-device runtime: open a verified package and score with it.

    from edge_agent.runtime import open_model
    model = open_model(Path("digits.fcpkg"), public_key=Path("fleetcast.pub"))
    scores = model.predict({"input": rows})
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from edge_agent.core.host import HostInfo
from edge_agent.core.manifest import Manifest, Signature
from edge_agent.core.signature import NanPolicy, validate_inputs
from edge_agent.errors import RuntimeUnavailable
from edge_agent.package import Package, load_public_key, open_package
from edge_agent.runtime.base import LoadedModel, Runtime

__all__ = ["Model", "load_model_bytes", "make_runtime", "open_model"]


def make_runtime(name: str, threads: int = 0, providers: tuple[str, ...] = ()) -> Runtime:
    if name == "onnxruntime":
        from edge_agent.runtime.onnx import OnnxRuntime

        return OnnxRuntime(threads=threads, providers=providers)
    if name == "litert":
        from edge_agent.runtime.tflite import TfliteRuntime

        return TfliteRuntime(threads=threads)
    raise RuntimeUnavailable(f"unknown runtime {name!r}")


def load_model_bytes(
    runtime: str,
    model_bytes: bytes,
    signature: Signature,
    threads: int = 0,
    providers: tuple[str, ...] = (),
) -> LoadedModel:
    return make_runtime(runtime, threads, providers).load(model_bytes, signature)


class Model:
    """A verified package loaded for scoring; validates every request first."""

    def __init__(self, package: Package, loaded: LoadedModel, nan_policy: NanPolicy) -> None:
        self.package = package
        self.manifest: Manifest = package.manifest
        self._loaded = loaded
        self._nan_policy: NanPolicy = nan_policy

    def predict(self, inputs: Mapping[str, object]) -> dict[str, np.ndarray]:
        arrays = validate_inputs(self.manifest.signature, inputs, self._nan_policy)
        return self._loaded.predict(arrays)


def open_model(
    package: Path | bytes,
    public_key: Path | bytes,
    *,
    host: HostInfo | None = None,
    threads: int = 0,
    nan_policy: NanPolicy = "reject",
) -> Model:
    """Verify a package (hash, signature, profile) and load it for scoring."""
    checked = open_package(package, load_public_key(public_key), host=host)
    manifest = checked.manifest
    loaded = load_model_bytes(
        manifest.runtime,
        checked.model_bytes,
        manifest.signature,
        threads=threads,
        providers=manifest.profile.execution_providers,
    )
    return Model(checked, loaded, nan_policy)
