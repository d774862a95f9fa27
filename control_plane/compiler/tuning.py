"""The mixed_int8 candidate of one profile: search precision per op against its budget."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from control_plane.compiler import mixed, tflite_mixed
from control_plane.compiler.quantize import build_onnx
from control_plane.compiler.report import Candidate
from control_plane.core.fidelity import fidelity_report
from control_plane.core.hardware import Budgets, HardwareProfile
from control_plane.errors import ControlPlaneError
from edge_agent.core.manifest import FidelityReport
from edge_agent.runtime import load_model_bytes

if TYPE_CHECKING:
    from control_plane.compiler.pipeline import Compiler

BASE = {"onnx": "dynamic_int8_per_channel", "tflite": "dynamic_int8"}  # both per channel

# The search picks the prefix that passes on the validation set, so it is gated with a
# margin over the profile's budget: on all-MiniLM-L6-v2, nearest-neighbour agreement
# ran up to ~0.02-0.04 higher on validation rows than on unseen sentences (256 rows: one
# standard error is ~0.016), mean cosine within 0.0002. Margins on what a budget allows
# to lose: 10 % of a cosine or regression allowance, half a top-1 allowance, 0.02 of
# nearest-neighbour agreement (at most half of what the budget leaves).
MARGIN_SHARE = 0.9
MARGIN_NN = 0.02


def margined(budgets: Budgets) -> Budgets:
    """The budget the search gates on: the profile's, tightened by the margins above."""
    emb, reg = budgets.embedding, budgets.regression
    return budgets.model_copy(
        update={
            "max_top1_loss": budgets.max_top1_loss / 2,
            "embedding": emb.model_copy(
                update={
                    "min_mean_cosine": 1.0 - (1.0 - emb.min_mean_cosine) * MARGIN_SHARE,
                    "min_p1_cosine": 1.0 - (1.0 - emb.min_p1_cosine) * MARGIN_SHARE,
                    "min_nn_agreement": emb.min_nn_agreement
                    + min(MARGIN_NN, (1.0 - emb.min_nn_agreement) / 2),
                }
            ),
            "regression": reg.model_copy(
                update={"max_relative_error": reg.max_relative_error * MARGIN_SHARE}
            ),
        }
    )


def tune_mixed(compiler: Compiler, profile: HardwareProfile, fmt: str) -> Candidate:
    """``<fmt>/mixed_int8`` for this profile's budget (cached per format and budget).

    Skipped when the per-channel int8 candidate already fits; otherwise the most
    sensitive weight ops are kept in float (:func:`mixed.search`).
    """
    budgets, spec = profile.budgets, profile.compile
    cache_key = json.dumps(
        [fmt, budgets.model_dump(mode="json"), spec.max_float_nodes, spec.max_tuning_seconds],
        sort_keys=True,
    )
    if cache_key in compiler._mixed_cache:
        return compiler._mixed_cache[cache_key]
    cand = Candidate(key=f"{fmt}/mixed_int8", format=fmt, recipe="mixed_int8")
    compiler._mixed_cache[cache_key] = cand
    base_key = f"{fmt}/{BASE[fmt]}"
    if base_key not in compiler.candidates:
        compiler.candidates[base_key] = compiler._build(fmt, BASE[fmt])
    base = compiler.candidates[base_key]
    if base.error or base.skipped:
        cand.error = f"mixed precision starts from {base_key}: {base.error or base.skipped}"
        return cand
    if compiler._fidelity(base.outputs, profile).passed:
        cand.skipped = f"not needed: {base_key} is within budget"
        return cand
    started = time.monotonic()
    compiler.progress(f"mixed precision ({fmt}) for {profile.id}: ranking ops by sensitivity")
    try:
        ranked = _ranked(compiler, fmt, spec.max_tuning_seconds / 2)
    except ControlPlaneError:
        raise
    except Exception as exc:  # a runtime run of the instrumented model
        cand.error = f"mixed precision: sensitivity run failed: {exc}"
        return cand
    if not ranked:
        cand.error = "mixed precision: the model has no weight op to keep in float"
        return cand
    ops = {node.name: node.op for node, _ in ranked}

    strict = margined(budgets)  # the search's gate: the budget with a margin

    def score(names: list[str]) -> tuple[bytes, dict[str, np.ndarray], FidelityReport]:
        from control_plane.compiler.pipeline import score_rows

        if fmt == "onnx":
            data = build_onnx(
                compiler.onnx_base(), "mixed_int8", compiler.calibration, exclude=names
            )
            signature = compiler.onnx_signature
        else:
            assert compiler._tflite is not None
            data, signature = compiler._tflite.build(
                "mixed_int8", compiler.calibration, exclude=names, ops=ops
            )
            signature = signature.model_copy(update={"batch": compiler.source.batch})
        runtime = "onnxruntime" if fmt == "onnx" else "litert"
        outputs = score_rows(load_model_bytes(runtime, data, signature), compiler.validation)
        cand.signature = signature
        report = fidelity_report(
            compiler.ref_validation, outputs, compiler.task, strict, labels=compiler.labels
        )
        return data, outputs, report

    start = 1
    base_report = compiler._fidelity(base.outputs, profile)
    if compiler.task == "embedding" and base_report.mean_cosine is not None and fmt == "onnx":
        start = mixed.predicted_count(
            ranked, 1.0 - base_report.mean_cosine, 1.0 - strict.embedding.min_mean_cosine
        )
    remaining = spec.max_tuning_seconds - (time.monotonic() - started)
    compiler.progress(
        f"  mixed precision: gating on the budget with a margin; first trial at {start} node(s)"
    )
    try:
        result = mixed.search(
            ranked,
            score,
            lambda r: r.passed,
            spec.max_float_nodes,
            remaining,
            compiler.progress,
            start=start,
        )
    except ControlPlaneError as exc:
        cand.error = str(exc)
        return cand
    cand.trials = result.trials
    if result.error or result.report is None:
        cand.error = result.error
        cand.signature = None
        return cand
    cand.model_bytes, cand.outputs = result.model_bytes, result.outputs
    cand.float_nodes = result.float_nodes
    return cand


def _ranked(
    compiler: Compiler, fmt: str, max_seconds: float
) -> list[tuple[mixed.WeightNode, float]]:
    if fmt in compiler._ranked:
        return compiler._ranked[fmt]
    if fmt == "onnx":
        base, batch = compiler.onnx_base(), compiler.source.batch
        proxy = mixed.sensitivities(base, compiler.validation, batch)
        ranked = mixed.measured_sensitivities(
            base, proxy, compiler.validation, batch, max_seconds, compiler.progress
        )
    else:
        assert compiler._tflite is not None
        float_bytes = compiler._tflite.float_model(compiler.calibration)
        from control_plane.compiler.tflite import _signature_keys

        _, _, dtypes = _signature_keys(float_bytes)
        names: list[Any] = [s.name for s in compiler.source.inputs]
        ranked = tflite_mixed.sensitivities(float_bytes, compiler.validation, names, dtypes)
    compiler._ranked[fmt] = ranked
    return ranked
