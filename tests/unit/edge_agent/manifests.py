"""A synthetic manifest for fast unit tests (no compile)."""

from __future__ import annotations

import numpy as np

from control_plane.core.stats import reference_statistics
from edge_agent.core.manifest import (
    FidelityReport,
    Lineage,
    Manifest,
    ModelFile,
    ProfileRef,
    Signature,
    TensorSpec,
    TestVectors,
)


def make_manifest(input_shape: tuple[int, ...] = (8,), classes: int = 4, seed: int = 0) -> Manifest:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(500, *input_shape)).astype(np.float32)
    scores = rng.random((500, classes)).astype(np.float32)
    stats = reference_statistics({"input": x}, {"output": scores}, "classification", "synthetic")
    return Manifest(
        package_id="synthetic-1-test-r1",
        model_name="synthetic",
        model_version="1",
        release=1,
        profile=ProfileRef(
            id="test", os="linux", arch="x86_64", accelerator="none", cpu_features=()
        ),
        runtime="onnxruntime",
        format="onnx",
        recipe="fp32",
        task="classification",
        model_file=ModelFile(path="model.onnx", sha256="0" * 64, size_bytes=0),
        signature=Signature(
            inputs=(TensorSpec(name="input", runtime_name="input", shape=(-1, *input_shape)),),
            outputs=(TensorSpec(name="output", runtime_name="output", shape=(-1, classes)),),
        ),
        reference=stats,
        fidelity=FidelityReport(rows=0, max_abs_error=0.0, mean_abs_error=0.0, passed=True),
        test_vectors=TestVectors(inputs={}, outputs={}, atol=0.0, rtol=0.0),
        lineage=Lineage(
            source_sha256="0" * 64,
            source_format="onnx",
            datasets=(),
            compiler_version="test",
            tool_versions={},
            created_by="test",
            created_at="2026-01-01T00:00:00+00:00",
        ),
        key_id="test",
    )
