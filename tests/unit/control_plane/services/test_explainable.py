"""Which packages get per-feature explanations, and the reason given when not."""

from __future__ import annotations

import numpy as np
import pytest

from control_plane.errors import InvalidInput
from control_plane.services.explanations import explainable
from edge_agent.core.manifest import Signature, TensorSpec
from tests.unit.control_plane.monitoring_support import monitored_manifest


def _manifest(*inputs: TensorSpec):
    rng = np.random.default_rng(0)
    base = monitored_manifest(rng.normal(size=(300, 4)), rng.random((300, 3)))
    return base.model_copy(
        update={"signature": Signature(inputs=inputs, outputs=base.signature.outputs)}
    )


def test_a_tabular_input_is_explained_with_the_reference_feature_names():
    names, size = explainable(monitored_manifest(np.zeros((300, 4)), np.ones((300, 3)) / 3))
    assert size == 4 and names == ["x[0]", "x[1]", "x[2]", "x[3]"]
    named = _manifest(
        TensorSpec(name="x", runtime_name="x", shape=(-1, 2), feature_names=("age", "income"))
    )
    assert explainable(named) == (["age", "income"], 2)


@pytest.mark.parametrize(
    ("inputs", "reason"),
    [
        (
            (
                TensorSpec(name="a", runtime_name="a", shape=(-1, 2)),
                TensorSpec(name="b", runtime_name="b", shape=(-1, 2)),
            ),
            "one input tensor (it has 2)",
        ),
        (
            (TensorSpec(name="ids", runtime_name="ids", dtype="int64", shape=(-1, 16)),),
            "int64: explanations need float inputs",
        ),
        (
            (TensorSpec(name="img", runtime_name="img", shape=(-1, 3, 32, 32)),),
            "3072 elements",
        ),
    ],
)
def test_models_without_per_feature_explanations_are_refused_with_the_reason(inputs, reason):
    with pytest.raises(InvalidInput, match=reason.replace("(", r"\(").replace(")", r"\)")):
        explainable(_manifest(*inputs))
