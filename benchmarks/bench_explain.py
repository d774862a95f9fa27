"""Cost of the explanation budget (docs/monitoring.md): one window of captured rows
explained with Kernel SHAP through edge_agent's ONNX runtime, side by side for several
``nsamples`` and background sizes, on a real model.

Model: scikit-learn's MLPClassifier (64 -> 32 -> 10) trained on the digits, written as an
ONNX graph (MatMul/Add/Relu/Softmax) and scored by ``OnnxRuntime`` as the control plane's
explanation job scores a package. Per setting: wall and CPU time to explain a window of
``max_rows`` rows, the model rows scored (counted), the worst additivity error, and how
stable the window's top-3 features are against the largest setting (the overlap).
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import markdown_table, tool_versions, write_results
from control_plane.core.attribution import additivity_error, attribution_drift
from control_plane.monitoring.explain import ExplainBudget, ShapExplainer, runtime_predict

ROWS = 16
# (nsamples, background rows, non-zero attributions per row: shap's default 10, or all)
SETTINGS = (
    (128, 8, 10), (256, 8, 10), (256, 32, 10), (512, 32, 10),
    (128, 8, None), (256, 8, None), (256, 32, None), (512, 32, None), (2048, 32, None),
)  # fmt: skip


def _model() -> tuple[Any, np.ndarray, np.ndarray]:
    from onnx import TensorProto, helper, numpy_helper
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier

    from edge_agent.core.manifest import Signature, TensorSpec
    from edge_agent.runtime.onnx import OnnxRuntime

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    with warnings.catch_warnings():  # not converged at 300 epochs: good enough (97 %)
        warnings.simplefilter("ignore")
        mlp = MLPClassifier((32,), max_iter=300, random_state=0).fit(x[:1200], y[:1200])
    (w1, w2), (b1, b2) = mlp.coefs_, mlp.intercepts_
    weights = [
        numpy_helper.from_array(np.asarray(a, dtype=np.float32), n)
        for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))
    ]
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h0"]),
            helper.make_node("Add", ["h0", "b1"], ["h1"]),
            helper.make_node("Relu", ["h1"], ["h"]),
            helper.make_node("MatMul", ["h", "w2"], ["z0"]),
            helper.make_node("Add", ["z0", "b2"], ["z"]),
            helper.make_node("Softmax", ["z"], ["probs"], axis=1),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 64])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [None, 10])],
        weights,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    signature = Signature(
        inputs=(TensorSpec(name="x", runtime_name="x", shape=(-1, 64)),),
        outputs=(TensorSpec(name="probs", runtime_name="probs", shape=(-1, 10)),),
    )
    loaded = OnnxRuntime(threads=1).load(proto.SerializeToString(), signature)
    return runtime_predict(loaded, "x", "probs"), x[1200:1500], x[1500:]


def run(results_dir: Path) -> str:
    predict, background, live = _model()
    window = live[:ROWS]
    counted = {"rows": 0}

    def counting(rows: np.ndarray) -> np.ndarray:
        counted["rows"] += len(rows)
        return predict(rows)

    results = []
    logging.getLogger("shap").setLevel(logging.WARNING)  # it logs every coalition at INFO
    for nsamples, bg, nonzero in SETTINGS:
        budget = ExplainBudget(
            max_rows=ROWS, nsamples=nsamples, background=bg, max_features=nonzero
        )
        explainer = ShapExplainer(counting, background, [f"p{i}" for i in range(64)], budget)
        counted["rows"] = 0
        wall, cpu = time.perf_counter(), time.process_time()
        attr = explainer.explain(window)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        results.append(
            {
                "nsamples": nsamples,
                "background": bg,
                "max_features": nonzero,
                "wall_s": wall,
                "cpu_s": cpu,
                "model_rows": counted["rows"],
                "max_additivity_error": float(
                    additivity_error(attr.values, attr.base_values, attr.predictions).max()
                ),
                "mean_abs": attr.mean_abs(),
            }
        )
    largest = results[-1]["mean_abs"]
    rows = []
    for r in results:
        drift = attribution_drift(largest, r["mean_abs"], k=3)
        r["top3_overlap_vs_largest"] = drift.top_k_overlap
        r["top3_spearman_vs_largest"] = drift.top_k_spearman
        rows.append(
            (
                r["nsamples"],
                r["background"],
                r["max_features"] or "all",
                f"{r['wall_s']:.2f}",
                f"{r['cpu_s']:.2f}",
                f"{r['model_rows']:,}",
                f"{r['max_additivity_error']:.1e}",
                f"{drift.top_k_overlap:.2f}",
                f"{drift.top_k_spearman:.2f}",
            )
        )
        del r["mean_abs"]
    markdown = "\n".join(
        [
            "## Explanation budget: one window of 16 captured rows, Kernel SHAP",
            "",
            "digits MLP (64 -> 32 -> 10, scikit-learn weights) as ONNX through edge_agent's "
            "OnnxRuntime (1 thread); same 16 rows for every setting, run one after another.",
            "",
            markdown_table(
                (
                    "nsamples",
                    "background rows",
                    "non-zero per row",
                    "wall s",
                    "CPU s",
                    "model rows scored",
                    "max additivity error",
                    "top-3 overlap vs 2048/32/all",
                    "top-3 Spearman vs 2048/32/all",
                ),
                rows,
            ),
        ]
    )
    write_results(
        results_dir,
        "explain",
        markdown,
        {"rows": ROWS, "results": results, "versions": tool_versions(("shap", "onnxruntime"))},
    )
    return markdown
