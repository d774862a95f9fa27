"""The manifest of one chosen candidate: signature, statistics, fidelity, test vectors, lineage."""

from __future__ import annotations

import getpass
import hashlib
import importlib.metadata
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from control_plane import __version__
from control_plane.compiler.report import ProfileOutcome
from control_plane.compiler.sources import sha256_file
from control_plane.core.hardware import HardwareProfile
from edge_agent.core.manifest import (
    ConfidenceCalibration,
    DatasetRef,
    Lineage,
    Manifest,
    ModelFile,
    TestVectors,
    make_package_id,
)
from edge_agent.package import key_id
from edge_agent.runtime import load_model_bytes

if TYPE_CHECKING:
    from control_plane.compiler.pipeline import Compiler

TOOLS = ("torch", "onnx", "onnxruntime", "litert-torch", "ai-edge-quantizer", "ai-edge-litert")


def _tool_versions() -> dict[str, str]:
    versions = {"fleetcast": __version__}
    for tool in TOOLS:
        try:
            versions[tool] = importlib.metadata.version(tool)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _tolerance(recipe: str, expected: Mapping[str, np.ndarray]) -> tuple[float, float]:
    """(atol, rtol) for on-device self-test: int8 kernels differ by a step across CPUs."""
    spread = max(float(np.ptp(v)) if v.size else 0.0 for v in expected.values())
    if recipe == "fp32":
        return 1e-4 + 1e-4 * spread, 1e-3
    if recipe == "fp16":
        return 1e-3 + 1e-2 * spread, 1e-2
    return 1e-3 + 5e-2 * spread, 0.0


def make_manifest(self: Compiler, profile: HardwareProfile, outcome: ProfileOutcome) -> Manifest:
    req = self.request
    cand = outcome.chosen
    assert cand is not None and cand.signature is not None and outcome.fidelity is not None
    count = min(req.test_vectors, next(iter(self.validation.values())).shape[0])
    # scored as the device's self-test scores them, in one call: dynamic int8 takes one
    # activation scale per call, so rows scored in another batch come out slightly apart
    runtime = "onnxruntime" if cand.format == "onnx" else "litert"
    loaded = load_model_bytes(runtime, cand.model_bytes, cand.signature)
    vectors = {k: v[:count] for k, v in self.validation.items()}
    expected = {k: np.array(v, copy=True) for k, v in loaded.predict(vectors).items()}
    atol, rtol = _tolerance(cand.recipe, expected)
    datasets = [
        DatasetRef(
            role="calibration",
            name=req.calibration.name,
            sha256=sha256_file(req.calibration),
            rows=_rows(self.calibration),
        ),
        DatasetRef(
            role="validation",
            name=req.validation.name,
            sha256=sha256_file(req.validation),
            rows=_rows(self.validation),
        ),
    ]
    if req.reference:
        datasets.append(
            DatasetRef(
                role="reference",
                name=req.reference.name,
                sha256=sha256_file(req.reference),
                rows=_rows(self.reference),
            )
        )
    if req.labels and self.labels is not None:
        datasets.append(
            DatasetRef(
                role="labels",
                name=req.labels.name,
                sha256=sha256_file(req.labels),
                rows=int(self.labels.shape[0]),
            )
        )
    return Manifest(
        package_id=make_package_id(req.model_name, req.model_version, profile.id, req.release),
        model_name=req.model_name,
        model_version=req.model_version,
        release=req.release,
        profile=profile.ref(),
        runtime=profile.runtime.name,
        format=cand.format,  # type: ignore[arg-type]
        recipe=cand.recipe,  # type: ignore[arg-type]
        task=self.task,
        model_file=ModelFile(
            path=f"model.{cand.format}",
            sha256=hashlib.sha256(cand.model_bytes).hexdigest(),
            size_bytes=cand.size_bytes,
        ),
        signature=cand.signature,
        reference=self.stats,
        fidelity=outcome.fidelity,
        test_vectors=TestVectors(
            inputs={k: v[:count].tolist() for k, v in self.validation.items()},
            outputs={k: v.tolist() for k, v in expected.items()},
            atol=atol,
            rtol=rtol,
        ),
        benchmark=outcome.benchmark,
        calibration=_calibration(self, cand, req),
        lineage=Lineage(
            source_sha256=self.source.sha256,
            source_format=self.source.kind,
            datasets=tuple(datasets),
            compiler_version=__version__,
            tool_versions=_tool_versions(),
            created_by=req.created_by or getpass.getuser(),
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        ),
        key_id=key_id(self.key.public_key()),
    )


def _rows(arrays: Mapping[str, np.ndarray]) -> int:
    return int(next(iter(arrays.values())).shape[0])


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _calibration(compiler: Any, cand: Any, req: Any) -> ConfidenceCalibration | None:
    """Confidence calibration of this candidate on the labelled validation rows (classifiers
    compiled with ``labels`` only): the control plane's estimated accuracy reads it."""
    from control_plane.core.accuracy import calibrate

    if compiler.task != "classification" or compiler.labels is None or not cand.outputs:
        return None
    scores = next(iter(cand.outputs.values()))
    labels = np.asarray(compiler.labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        return None
    return calibrate(scores, labels, req.labels.name)
