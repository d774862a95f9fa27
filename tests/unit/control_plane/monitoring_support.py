"""Manifests with lineage for the monitoring tests (no compile)."""

from __future__ import annotations

import numpy as np

from control_plane.core.stats import reference_statistics
from edge_agent.core.manifest import (
    DatasetRef,
    FidelityReport,
    Lineage,
    Manifest,
    ModelFile,
    ProfileRef,
    Signature,
    TensorSpec,
    TestVectors,
    make_package_id,
)


def monitored_manifest(
    x: np.ndarray,
    scores: np.ndarray,
    version: str = "1",
    profile: str = "x86-64-generic",
    datasets: tuple[DatasetRef, ...] = (),
) -> Manifest:
    """A classification package manifest whose reference statistics come from ``x``/``scores``."""
    features, classes = x.shape[1], scores.shape[1]
    stats = reference_statistics({"x": x}, {"probs": scores}, "classification", "test")
    return Manifest(
        package_id=make_package_id("digits", version, profile, 1),
        model_name="digits",
        model_version=version,
        release=1,
        profile=ProfileRef(
            id=profile, os="linux", arch="x86_64", accelerator="none", cpu_features=()
        ),
        runtime="onnxruntime",
        format="onnx",
        recipe="fp32",
        task="classification",
        model_file=ModelFile(path="model.onnx", sha256="0" * 64, size_bytes=0),
        signature=Signature(
            inputs=(TensorSpec(name="x", runtime_name="x", shape=(-1, features)),),
            outputs=(TensorSpec(name="probs", runtime_name="probs", shape=(-1, classes)),),
        ),
        reference=stats,
        fidelity=FidelityReport(rows=100, max_abs_error=1e-6, mean_abs_error=1e-7, passed=True),
        test_vectors=TestVectors(inputs={}, outputs={}, atol=0.0, rtol=0.0),
        lineage=Lineage(
            source_sha256="1" * 64,
            source_format="onnx",
            datasets=datasets,
            compiler_version="test",
            tool_versions={},
            created_by="test",
            created_at="2026-11-29T22:00:00+00:00",
        ),
        key_id="test",
    )
