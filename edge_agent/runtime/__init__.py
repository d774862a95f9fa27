"""The on-device runtime: open a verified package and score with it.

    from edge_agent.runtime import open_model
    model = open_model(Path("digits.fcpkg"), public_key=Path("fleetcast.pub"))
    scores = model.predict({"input": rows})
    window = model.telemetry.close_window(device_id="dev-1", sequence=1)

Every call is validated against the manifest's signature (InvalidInput on a
mismatch) and, unless ``telemetry=False``, counted in the model's telemetry
window (see :mod:`edge_agent.core.telemetry`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_agent.core.host import HostInfo
from edge_agent.core.signature import InputValidator, NanPolicy, check_finite
from edge_agent.core.telemetry import ModelTelemetry, TelemetryConfig
from edge_agent.errors import EdgeError, InvalidInput, RuntimeUnavailable, ScoringError
from edge_agent.package import Package, load_public_key, open_device_package
from edge_agent.runtime.base import LoadedModel, Runtime

if TYPE_CHECKING:
    from edge_agent.core.device_manifest import AnyManifest, AnySignature

__all__ = ["FixedBatch", "Model", "load_model_bytes", "make_runtime", "open_model"]


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
    signature: AnySignature,
    threads: int = 0,
    providers: tuple[str, ...] = (),
) -> LoadedModel:
    loaded = make_runtime(runtime, threads, providers).load(model_bytes, signature)
    if signature.batch is not None:
        return FixedBatch(loaded, signature.batch)
    return loaded


class FixedBatch:
    """A model file that scores exactly ``batch`` rows per call (a fixed-batch export).

    A request of any size is split into calls of ``batch`` rows; the last call is
    padded by repeating its final row and the padding's outputs are dropped, so
    callers get one output row per input row, as with a dynamic batch.
    """

    def __init__(self, loaded: LoadedModel, batch: int) -> None:
        self.loaded = loaded
        self.batch = batch
        self.signature = loaded.signature

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = next(iter(inputs.values())).shape[0]
        if rows == self.batch:
            return self.loaded.predict(inputs)
        parts: list[dict[str, np.ndarray]] = []
        for start in range(0, rows, self.batch):
            chunk = {k: v[start : start + self.batch] for k, v in inputs.items()}
            taken = next(iter(chunk.values())).shape[0]
            if taken < self.batch:
                chunk = {
                    k: np.concatenate([v, np.repeat(v[-1:], self.batch - taken, axis=0)])
                    for k, v in chunk.items()
                }
            out = self.loaded.predict(chunk)
            parts.append({k: v[:taken] for k, v in out.items()})
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


class Model:
    """A verified package loaded for scoring; validates and counts every request.

    Safe to call from several threads at once: onnxruntime sessions run
    concurrently, LiteRT interpreters are serialised per model.
    """

    def __init__(
        self,
        package: Package[Any],
        loaded: LoadedModel,
        nan_policy: NanPolicy = "reject",
        telemetry: ModelTelemetry | None = None,
    ) -> None:
        self.package = package
        self.manifest: AnyManifest = package.manifest
        self.loaded = loaded
        self.telemetry = telemetry
        self._nan_policy: NanPolicy = nan_policy
        # with telemetry the NaN check reuses the feature rows (one pass less over the input)
        self._validate = InputValidator(
            self.manifest.signature, nan_policy if telemetry is None else "allow"
        )
        self._check_finite = telemetry is not None and nan_policy == "reject"

    def predict(self, inputs: Mapping[str, object]) -> dict[str, np.ndarray]:
        return self.predict_with_id(inputs)[0]

    def predict_with_id(self, inputs: Mapping[str, object]) -> tuple[dict[str, np.ndarray], str]:
        """Outputs and the prediction id (for captures and delayed labels)."""
        started = perf_counter()
        telemetry = self.telemetry
        try:
            arrays = self._validate(inputs)
            if telemetry is None:
                rows = None
            else:  # computed while the inputs are in cache; the NaN check reuses them
                rows = telemetry.input_rows(arrays)
                if self._check_finite:
                    check_finite(arrays, rows)
        except InvalidInput:
            if telemetry is not None:
                telemetry.record_failure("invalid", perf_counter() - started)
            raise
        try:
            outputs = self.loaded.predict(arrays)
        except EdgeError:
            if telemetry is not None:
                telemetry.record_failure("error", perf_counter() - started)
            raise
        except Exception as exc:  # a runtime's own error types
            if telemetry is not None:
                telemetry.record_failure("error", perf_counter() - started)
            raise ScoringError(f"{self.manifest.runtime} failed: {exc}") from exc
        if telemetry is None:
            return outputs, ""
        return outputs, telemetry.record(arrays, outputs, perf_counter() - started, rows)


def open_model(
    package: Path | bytes,
    public_key: Path | bytes,
    *,
    host: HostInfo | None = None,
    threads: int = 0,
    nan_policy: NanPolicy = "reject",
    telemetry: TelemetryConfig | bool = True,
    installed_release: int | None = None,
    expected_sha256: str | None = None,
) -> Model:
    """Verify a package (hash, signature, profile, release) and load it for scoring.

    The manifest is read with the device's reader (:func:`open_device_package`:
    the same checks, no pydantic import). Raises PackageError naming the check
    that failed, RuntimeUnavailable when the package's runtime is not installed here.
    """
    checked = open_device_package(
        package,
        load_public_key(public_key),
        host=host,
        installed_release=installed_release,
        expected_sha256=expected_sha256,
    )
    manifest = checked.manifest
    loaded = load_model_bytes(
        manifest.runtime,
        checked.model_bytes,
        manifest.signature,
        threads=threads,
        providers=manifest.profile.execution_providers,
    )
    recorder = None
    if telemetry is not False:
        config = TelemetryConfig() if telemetry is True else telemetry
        recorder = ModelTelemetry(manifest, config)
    return Model(checked, loaded, nan_policy, recorder)
