"""The per-call fast paths give exactly what the general code gives.

Input validation accepts ready arrays by attribute checks only, channel means
are divided a buffer at a time, small rows and latencies are buffered as Python
floats: each must count, reject and return what the straightforward code does.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from manifests import make_manifest

from edge_agent.core.bins import bin_counts, channel_sums, feature_matrix
from edge_agent.core.signature import InputValidator, validate_inputs
from edge_agent.core.telemetry import LATENCY_BATCH, ModelTelemetry
from edge_agent.errors import InvalidInput

IMAGE = make_manifest((3, 10, 10), classes=4)
TABLE = make_manifest((8,), classes=4)


def test_channel_features_are_bit_identical_to_float64_means_of_float32_sums() -> None:
    x = np.random.default_rng(0).normal(size=(7, 3, 10, 10)).astype(np.float32)
    sums = np.add.reduce(x.reshape(7, 3, -1), axis=2).astype(np.float64)
    assert np.array_equal(feature_matrix(x, "channel"), sums / 100)
    assert np.array_equal(channel_sums(x), np.add.reduce(x.reshape(7, 3, -1), axis=2))


def test_channel_sums_are_quiet_on_overflow_and_infinities() -> None:
    x = np.full((1, 3, 4, 4), 3e38, np.float32)
    x[0, 1, 0, 0], x[0, 1, 0, 1] = np.inf, -np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sums = channel_sums(x)
    assert np.isinf(sums[0, 0]) and np.isnan(sums[0, 1])


@pytest.mark.parametrize(
    "value",
    [
        np.zeros((2, 3, 10, 10), np.float32),  # the fast path
        np.zeros((3, 10, 10), np.float32),  # no batch axis
        np.zeros((2, 3, 10, 10), np.float64),  # converted
        np.zeros((2, 10, 10, 3), np.float32).transpose(0, 3, 1, 2),  # not contiguous
        np.zeros((2, 3, 10, 10), np.float32).tolist(),  # not an array
    ],
)
def test_validator_returns_what_validate_inputs_returns(value: object) -> None:
    validator = InputValidator(IMAGE.signature)
    got = validator({"any-name": value})
    want = validate_inputs(IMAGE.signature, {"input": value})
    assert got.keys() == want.keys() == {"input"}
    assert got["input"].dtype == want["input"].dtype == np.float32
    assert got["input"].flags.c_contiguous and np.array_equal(got["input"], want["input"])
    if isinstance(value, np.ndarray) and value.dtype == np.float32 and value.ndim == 4:
        if value.flags.c_contiguous:
            assert got["input"] is value  # no copy


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (np.zeros((2, 3, 10, 9), np.float32), "dimension 3 is 9"),
        (np.zeros((0, 3, 10, 10), np.float32), "empty batch"),
        (np.zeros((2, 3, 10, 10), np.int64), "expected float32"),
        (np.full((2, 3, 10, 10), np.nan, np.float32), "600 NaN or infinite"),
    ],
)
def test_validator_rejects_like_validate_inputs(value: np.ndarray, message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as fast:
        InputValidator(IMAGE.signature)({"input": value})
    with pytest.raises(InvalidInput) as slow:
        validate_inputs(IMAGE.signature, {"input": value})
    assert str(fast.value) == str(slow.value)


def test_validator_allow_policy_lets_nan_through() -> None:
    x = np.full((1, 8), np.nan, np.float32)
    assert InputValidator(TABLE.signature, "allow")({"input": x})["input"] is x


@pytest.mark.parametrize(("manifest", "row"), [(IMAGE, (3, 10, 10)), (TABLE, (8,))])
def test_window_counts_equal_bin_counts_of_all_rows(manifest: object, row: tuple[int, ...]) -> None:
    """Batch-1 calls (Python-float rows) and batch-40 calls (numpy buffer), mixed,
    over more than one buffer's worth, count what ``bin_counts`` counts."""
    telemetry = ModelTelemetry(manifest)  # type: ignore[arg-type]
    rng = np.random.default_rng(3)
    batches = [
        rng.normal(scale=1.5, size=(1 if i % 3 else 40, *row)).astype(np.float32)
        for i in range(300)
    ]
    scores = [rng.random((len(b), 4)).astype(np.float32) for b in batches]
    for x, y in zip(batches, scores, strict=True):
        telemetry.record({"input": x}, {"output": y}, 0.001)
    window = telemetry.close_window("d", 1)
    stats = telemetry.manifest.reference.inputs[0]
    matrix = feature_matrix(np.concatenate(batches), stats.feature_axis)
    for i, (feature, counted) in enumerate(
        zip(stats.features, window["inputs"][0]["features"], strict=True)
    ):
        expected = bin_counts(matrix[:, i], np.asarray(feature.edges))
        assert counted["counts"] == expected.tolist(), feature.name
    predicted = np.concatenate(scores).argmax(axis=1)
    assert window["outputs"][0]["features"][0]["counts"] == np.bincount(predicted).tolist()
    assert window["rows"] == len(matrix)


def test_buffered_latencies_all_reach_the_sketches() -> None:
    telemetry = ModelTelemetry(TABLE)
    x, y = np.zeros((1, 8), np.float32), np.zeros((1, 4), np.float32)
    calls = LATENCY_BATCH + 10
    for i in range(calls):
        telemetry.record({"input": x}, {"output": y}, 0.001 * (1 + i % 10))
    health = telemetry.health()
    assert health.requests == calls and health.latency_ms_p95 == pytest.approx(10.0, rel=0.05)
    window = telemetry.close_window("d", 1)
    assert window["latency_ms"]["count"] == calls
    assert window["latency_ms"]["max"] == pytest.approx(10.0)
    assert telemetry.health().requests == calls  # closed windows stay in the lifetime sketch
