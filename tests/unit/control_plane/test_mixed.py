"""Mixed precision's parts on small graphs: the gated model that measures each weight
node's end-to-end effect, the first guess of the search, the search, the margin."""

from __future__ import annotations

import numpy as np
import pytest

from control_plane.compiler import mixed
from control_plane.compiler.quantize import build_onnx
from control_plane.compiler.tuning import margined
from control_plane.core.hardware import Budgets
from edge_agent.core.manifest import FidelityReport


def _mlp(seed: int = 0) -> bytes:
    """x [N, 16] -> MatMul 16x32 -> Relu -> MatMul 32x8, weights with a few outliers."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.3, (16, 32)).astype(np.float32)
    w2 = rng.normal(0, 0.3, (32, 8)).astype(np.float32)
    w1[0, :4] = 3.0  # per-channel scales matter
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
            helper.make_node("Relu", ["h"], ["r"], name="relu"),
            helper.make_node("MatMul", ["r", "w2"], ["y"], name="fc2"),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def _run(data: bytes, feed: dict[str, np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, feed)[0])


def test_gated_model_is_fp32_when_off_and_dynamic_int8_when_on() -> None:
    fp32 = _mlp()
    nodes = mixed.weight_nodes(fp32)
    assert [n.name for n in nodes] == ["fc1", "fc2"]
    gated = mixed._gated(fp32, nodes)
    x = np.random.default_rng(1).normal(0, 1, (64, 16)).astype(np.float32)
    exact = _run(fp32, {"x": x})
    off = _run(gated, {"x": x, mixed.GATES: np.zeros(2, np.float32)})
    np.testing.assert_array_equal(off, exact)
    for index, other in enumerate(["fc2", "fc1"]):
        gates = np.zeros(2, np.float32)
        gates[index] = 1.0
        simulated = _run(gated, {"x": x, mixed.GATES: gates})
        # onnxruntime's own per-channel dynamic int8 with only this node quantized
        real = _run(build_onnx(fp32, "mixed_int8", {}, exclude=[other]), {"x": x})
        assert not np.allclose(simulated, exact, atol=1e-4)  # the gate changed something
        spread = float(np.abs(exact).max())
        np.testing.assert_allclose(simulated, real, atol=0.02 * spread)


def test_measured_sensitivities_rank_by_output_error() -> None:
    fp32 = _mlp()
    x = {"x": np.random.default_rng(2).normal(0, 1, (40, 16)).astype(np.float32)}
    proxy = mixed.sensitivities(fp32, x, None)
    measured = mixed.measured_sensitivities(fp32, proxy, x, None, 60.0, lambda _: None)
    assert sorted(n.name for n, _ in measured) == ["fc1", "fc2"]
    errors = [e for _, e in measured]
    assert errors == sorted(errors, reverse=True) and errors[-1] > 0
    # out of time at once: the local-error order is kept, and the cut is said
    said: list[str] = []
    cut = mixed.measured_sensitivities(fp32, proxy, x, None, -1.0, said.append)
    assert [n.name for n, _ in cut] == [n.name for n, _ in proxy]
    assert said and "measured 0 of 2" in said[0]


def _ranked(errors: list[float]) -> list[tuple[mixed.WeightNode, float]]:
    return [
        (mixed.WeightNode(f"n{i}", "MatMul", "x", np.zeros((4, 4), np.float32)), e)
        for i, e in enumerate(errors)
    ]


def test_predicted_count_removes_the_needed_share_of_squared_error() -> None:
    ranked = _ranked([0.4, 0.3, 0.2, 0.1, 0.1])  # squares: .16 .09 .04 .01 .01 (= .31)
    assert mixed.predicted_count(ranked, deficit=0.01, allowed=0.02) == 1  # already fits
    # half the deficit must go: .16/.31 = 0.52 >= 0.5
    assert mixed.predicted_count(ranked, deficit=0.02, allowed=0.01) == 1
    # 80 % must go: .16+.09 = .81 of it
    assert mixed.predicted_count(ranked, deficit=0.05, allowed=0.01) == 2
    assert mixed.predicted_count(ranked, deficit=1.0, allowed=0.0) == 5


def _report(passed: bool) -> FidelityReport:
    return FidelityReport(
        rows=1,
        max_abs_error=0.0,
        mean_abs_error=0.0,
        passed=passed,
        reasons=() if passed else ("short",),
    )


@pytest.mark.parametrize(
    ("needed", "start", "trials"),
    [
        (6, 4, [4, 6, 5]),  # guess too low: grow by half, then the one below
        (6, 6, [6, 5]),  # right guess: one trial below confirms it
        (3, 8, [8, 7, 3, 1, 2]),  # guess too high: bisect below
        (5, 1, [1, 2, 3, 5, 4]),  # no guess: grow from 1
    ],
)
def test_search_finds_the_smallest_passing_prefix(
    needed: int, start: int, trials: list[int]
) -> None:
    counts: list[int] = []

    def score(names: list[str]) -> tuple[bytes, dict[str, np.ndarray], FidelityReport]:
        counts.append(len(names))
        return b"m%d" % len(names), {}, _report(len(names) >= needed)

    result = mixed.search(
        _ranked([0.1] * 12), score, lambda r: r.passed, 12, 60.0, lambda _: None, start=start
    )
    assert result.error is None
    assert len(result.float_nodes) == needed and result.model_bytes == b"m%d" % needed
    assert counts == trials


def test_search_fails_naming_its_bounds() -> None:
    result = mixed.search(
        _ranked([0.1] * 3),
        lambda names: (b"", {}, _report(False)),
        lambda r: r.passed,
        2,
        60.0,
        lambda _: None,
    )
    assert result.error is not None and "2 nodes" in result.error and not result.float_nodes


def test_margin_tightens_what_a_budget_allows_to_lose() -> None:
    budgets = Budgets(max_package_bytes=1, max_memory_bytes=1)
    strict = margined(budgets)
    assert strict.embedding.min_mean_cosine == pytest.approx(1 - 0.01 * 0.9)
    assert strict.embedding.min_nn_agreement == pytest.approx(0.92)
    assert strict.max_top1_loss == pytest.approx(budgets.max_top1_loss / 2)
    assert strict.regression.max_relative_error < budgets.regression.max_relative_error
    tight = budgets.model_copy(
        update={"embedding": budgets.embedding.model_copy(update={"min_nn_agreement": 0.99})}
    )
    assert margined(tight).embedding.min_nn_agreement == pytest.approx(0.995)  # < 1
