"""The mixed_int8 candidate of one profile: search precision per op against its budget."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from control_plane.compiler import mixed, tflite_mixed
from control_plane.compiler.quantize import build_onnx
from control_plane.compiler.report import Candidate
from control_plane.core.hardware import HardwareProfile
from control_plane.errors import ControlPlaneError
from edge_agent.core.manifest import FidelityReport
from edge_agent.runtime import load_model_bytes

if TYPE_CHECKING:
    from control_plane.compiler.pipeline import Compiler

BASE = {"onnx": "dynamic_int8_per_channel", "tflite": "dynamic_int8"}  # both per channel


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
        ranked = _ranked(compiler, fmt)
    except ControlPlaneError:
        raise
    except Exception as exc:  # a runtime run of the instrumented model
        cand.error = f"mixed precision: sensitivity run failed: {exc}"
        return cand
    if not ranked:
        cand.error = "mixed precision: the model has no weight op to keep in float"
        return cand
    ops = {node.name: node.op for node, _ in ranked}

    def score(names: list[str]) -> tuple[bytes, dict[str, np.ndarray], FidelityReport]:
        from control_plane.compiler.pipeline import score_rows

        if fmt == "onnx":
            data = build_onnx(
                compiler.source.onnx_bytes, "mixed_int8", compiler.calibration, exclude=names
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
        return data, outputs, compiler._fidelity(outputs, profile)

    remaining = spec.max_tuning_seconds - (time.monotonic() - started)
    try:
        result = mixed.search(
            ranked, score, lambda r: r.passed, spec.max_float_nodes, remaining, compiler.progress
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


def _ranked(compiler: Compiler, fmt: str) -> list[tuple[mixed.WeightNode, float]]:
    if fmt in compiler._ranked:
        return compiler._ranked[fmt]
    if fmt == "onnx":
        ranked = mixed.sensitivities(
            compiler.source.onnx_bytes, compiler.validation, compiler.source.batch
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
