"""Integer and boolean inputs on the device: validation, drift bins, fixed batches."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest

from control_plane.core.stats import input_stats, integer_kind, reference_statistics
from edge_agent.core.manifest import Signature, TensorSpec
from edge_agent.core.signature import InputValidator, validate_inputs
from edge_agent.core.telemetry import TensorBinner, TensorCounter
from edge_agent.errors import InvalidInput
from edge_agent.runtime import FixedBatch


def _tokens(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(4, 17, rows)
    ids = rng.integers(2, 500, (rows, 16))
    ids[rng.random((rows, 16)) < 0.05] = 1  # unknown
    mask = (np.arange(16)[None, :] < lengths[:, None]).astype(np.int64)
    return ids * mask, mask


SIGNATURE = Signature(
    inputs=(
        TensorSpec(name="ids", runtime_name="ids", shape=(-1, 16), dtype="int64"),
        TensorSpec(name="mask", runtime_name="mask", shape=(-1, 16), dtype="bool"),
    ),
    outputs=(TensorSpec(name="e", runtime_name="e", shape=(-1, 8)),),
)


def test_integer_inputs_are_validated_and_never_taken_as_floats() -> None:
    ids, mask = _tokens(4)
    ok = validate_inputs(SIGNATURE, {"ids": ids.astype(np.int32), "mask": mask})
    assert ok["ids"].dtype == np.int64 and ok["mask"].dtype == np.bool_
    validator = InputValidator(SIGNATURE)
    assert validator({"ids": ids, "mask": mask.astype(bool)})["mask"].dtype == np.bool_
    with pytest.raises(InvalidInput, match="expected int64"):
        validate_inputs(SIGNATURE, {"ids": ids.astype(np.float32), "mask": mask})
    with pytest.raises(InvalidInput, match=r"values 0\.\.2 do not fit bool"):
        validate_inputs(SIGNATURE, {"ids": ids, "mask": mask * 2})
    with pytest.raises(InvalidInput, match="do not fit int8"):
        spec = TensorSpec(name="c", runtime_name="c", shape=(-1, 2), dtype="int8")
        small = Signature(inputs=(spec,), outputs=SIGNATURE.outputs)
        validate_inputs(small, {"c": np.array([[1, 300]])})


def test_ids_masks_and_codes_get_statistics_of_their_kind() -> None:
    ids, mask = _tokens(400)
    codes = np.random.default_rng(1).integers(0, 5, (400, 3))
    assert integer_kind("input_ids", ids) == "tokens"
    assert integer_kind("attention_mask", mask) == "mask"
    assert integer_kind("store", codes) == "categorical"
    tokens = input_stats("input_ids", ids, unknown_id=1)
    assert tokens.feature_axis == "tokens" and tokens.unknown_id == 1 and tokens.pad_id == 0
    length, padding, unknown = tokens.features
    assert length.mean == pytest.approx(float(mask.sum(1).mean()))
    assert padding.mean == pytest.approx(float((ids == 0).mean()))
    assert unknown.mean == pytest.approx(float((ids == 1).mean()))
    masks = input_stats("attention_mask", mask)
    assert masks.feature_axis == "mask" and masks.features[0].name == "length"
    cats = input_stats("store", codes)
    assert cats.feature_axis == "element"
    assert all(f.kind == "categorical" and f.categories == (0, 1, 2, 3, 4) for f in cats.features)
    assert sum(cats.features[0].frequencies) == pytest.approx(1.0)


def test_device_counts_token_traffic_on_the_reference_bins() -> None:
    ids, mask = _tokens(400)
    stats = reference_statistics(
        {"ids": ids, "mask": mask}, {"e": np.zeros((400, 2), np.float32)}, "embedding", "ref",
        unknown_id=1,
    )  # fmt: skip
    for tensor, array in (("ids", ids), ("mask", mask)):
        binner = TensorBinner(next(s for s in stats.inputs if s.tensor == tensor))
        counter = TensorCounter(binner)
        for start in range(0, 400, 7):  # calls of every size, small and buffered
            counter.add(array[start : start + 7])
        counts = counter.take()
        expected = binner.counts(array)
        assert expected is not None and np.array_equal(counts, expected)
        # the reference data itself lands in its bins with the reference frequencies
        first = binner.stats.features[0]
        got = counts[: len(first.frequencies)] / 400
        assert np.allclose(got, first.frequencies, atol=1e-9)


class _Batch2:
    """A model file that scores exactly two rows (doubles them)."""

    signature = SIGNATURE

    def __init__(self) -> None:
        self.calls: list[int] = []

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = next(iter(inputs.values())).shape[0]
        assert rows == 2
        self.calls.append(rows)
        return {"e": inputs["ids"].astype(np.float32) * 2}


def test_fixed_batch_models_score_any_request_size() -> None:
    inner = _Batch2()
    model = FixedBatch(inner, 2)
    ids = np.arange(5 * 16).reshape(5, 16)
    out = model.predict({"ids": ids, "mask": np.ones((5, 16), bool)})["e"]
    assert out.shape == (5, 16) and np.array_equal(out, ids * 2)  # padding rows dropped
    assert inner.calls == [2, 2, 2]
