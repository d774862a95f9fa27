"""The self-test every loader runs: the manifest's test vectors through the loaded model.

The agent's installer and the serverless handlers both refuse a model whose
outputs on its own test vectors miss the expected ones.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from edge_agent.core.signature import validate_inputs

if TYPE_CHECKING:
    from edge_agent.core.device_manifest import AnyManifest
    from edge_agent.runtime.base import LoadedModel


def self_test(loaded: LoadedModel, manifest: AnyManifest) -> list[str]:
    """Every way the model's outputs on its test vectors miss the expected ones."""
    vectors = manifest.test_vectors
    specs = {s.name: s for s in manifest.signature.inputs}
    raw = {n: np.asarray(v, dtype=np.dtype(specs[n].dtype)) for n, v in vectors.inputs.items()}
    outputs = loaded.predict(validate_inputs(manifest.signature, raw, "allow"))
    problems = []
    for name, expected_list in vectors.outputs.items():
        expected = np.asarray(expected_list, dtype=np.float32)
        got = outputs.get(name)
        if got is None:
            problems.append(f"output {name!r} is missing")
        elif got.shape != expected.shape:
            problems.append(f"output {name!r}: shape {got.shape} != expected {expected.shape}")
        elif not np.allclose(got, expected, atol=vectors.atol, rtol=vectors.rtol):
            worst = float(np.max(np.abs(got - expected)))
            problems.append(
                f"output {name!r}: max abs error {worst:.4g} exceeds atol {vectors.atol:.3g} "
                f"+ rtol {vectors.rtol:.3g}*|expected|"
            )
    return problems
