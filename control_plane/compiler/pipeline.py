"""The compile pipeline: one source model, many hardware profiles, one package each.

For every candidate (format, recipe) that any selected profile allows, the
pipeline builds the model once and scores the held-out data with it through
the device runtime. Each profile then keeps the candidates inside its budgets
(fidelity, size), benchmarks them when this host can run the target, and picks:

- measured: the fastest at batch 1. A candidate earlier in preference order
  is kept when the fastest beats it by less than ``SPEEDUP_MARGIN`` (3%, about
  the run-to-run spread of the measurement), so a near tie does not flip the
  choice between runs, while a candidate measurably slower than another is
  never shipped (dynamic int8 on convolutions runs several times slower than
  fp32 on x86).
- not measurable here: the first candidate in preference order, and the
  report says why it was not measured.

Packages are written only when every selected profile has one: a failed
compile leaves no package behind.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from control_plane.compiler.bench import measure_latency
from control_plane.compiler.mixed import attention_node
from control_plane.compiler.onnx_compat import fit_runtime, opsets_of
from control_plane.compiler.package import build_package, package_filename, write_atomic
from control_plane.compiler.quantize import build_onnx, fuse_transformer
from control_plane.compiler.record import make_manifest
from control_plane.compiler.report import Candidate, ProfileOutcome
from control_plane.compiler.sources import (
    SourceModel,
    check_data,
    load_labels,
    load_npz,
    load_onnx,
    load_torch,
    torch_module_for,
)
from control_plane.compiler.tasks import infer_task
from control_plane.compiler.tflite import TfliteBuilder
from control_plane.compiler.tuning import tune_mixed
from control_plane.core.fidelity import fidelity_report
from control_plane.core.hardware import HardwareProfile
from control_plane.core.stats import reference_statistics
from control_plane.errors import CompileError, ControlPlaneError, InvalidInput
from control_plane.signing import load_private_key
from edge_agent.core.host import HostInfo
from edge_agent.core.manifest import (
    Benchmark,
    FidelityReport,
    Signature,
    Task,
    TensorSpec,
)
from edge_agent.host import detect_host
from edge_agent.runtime import load_model_bytes
from edge_agent.runtime.base import LoadedModel

logger = logging.getLogger(__name__)

SPEEDUP_MARGIN = 0.03
# quantized from the fused transformer graph when there is one; dynamic_int8 stays the
# plain quantize_dynamic floor, weight-only and fp16 take the graph as it comes
FUSED_RECIPES = ("dynamic_int8_per_channel", "mixed_int8")
TOOLS = ("torch", "onnx", "onnxruntime", "litert-torch", "ai-edge-quantizer", "ai-edge-litert")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class CompileRequest:
    model: Path
    calibration: Path
    validation: Path
    profiles: list[HardwareProfile]
    out_dir: Path
    signing_key: Path
    model_name: str
    model_version: str
    release: int = 1
    factory: str | None = None
    reference: Path | None = None
    labels: Path | None = None
    task: Task | None = None
    created_by: str | None = None
    test_vectors: int = 8
    unknown_id: int | None = None  # the tokenizer's unknown-token id, for drift statistics


def _onnx_signature(source: SourceModel, outputs: Mapping[str, np.ndarray]) -> Signature:
    return Signature(
        inputs=tuple(
            TensorSpec(
                name=s.name,
                runtime_name=s.name,
                shape=(-1, *s.shape[1:]),
                dtype=s.dtype,  # type: ignore[arg-type]
                model_dtype=s.dtype,  # type: ignore[arg-type]
            )
            for s in source.inputs
        ),
        outputs=tuple(
            TensorSpec(name=name, runtime_name=name, shape=(-1, *value.shape[1:]))
            for name, value in outputs.items()
        ),
        batch=source.batch,
    )


SCORE_ROWS = 64


def score_rows(model: LoadedModel, data: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Outputs for every row, scored ``SCORE_ROWS`` at a time and copied out.

    Chunks bound the runtime's working memory on large models (a BERT-sized encoder
    needs ~600 MB of activations for 256 rows of 64 tokens at once), and the copy
    matters: onnxruntime's output arrays can keep the session's memory arena alive,
    which piled up ~650 MB per candidate before.
    """
    rows = next(iter(data.values())).shape[0]
    parts = [
        model.predict({k: v[i : i + SCORE_ROWS] for k, v in data.items()})
        for i in range(0, rows, SCORE_ROWS)
    ]
    return {k: np.concatenate([np.array(p[k], copy=True) for p in parts]) for k in parts[0]}


class Compiler:
    """Runs one :class:`CompileRequest`; :meth:`run` returns one outcome per profile."""

    def __init__(
        self,
        request: CompileRequest,
        progress: Progress | None = None,
        host: HostInfo | None = None,
    ) -> None:
        self.request = request
        self.progress: Progress = progress or (lambda message: logger.info("%s", message))
        self.host = host or detect_host()
        self._tflite: TfliteBuilder | None = None
        self.candidates: dict[str, Candidate] = {}
        self._mixed_cache: dict[str, Candidate] = {}
        self._ranked: dict[str, list[Any]] = {}
        self._fused: bytes | None = None

    # -- inputs

    def _load(self) -> None:
        req = self.request
        self.key = load_private_key(req.signing_key)
        self.progress(f"loading model {req.model}")
        calibration_raw = load_npz(req.calibration, "calibration")
        opset = max(p.compile.opset for p in req.profiles)
        if req.model.suffix == ".onnx":
            self.source = load_onnx(req.model)
        elif req.model.suffix == ".pt2" or req.factory is not None:
            self.source = load_torch(
                req.model, req.factory, calibration_raw, opset, req.calibration
            )
        else:
            raise InvalidInput(
                f"model {req.model}: unknown kind; expected .onnx, a torch.export .pt2, "
                "or a state_dict with --factory module:function"
            )
        if self.source.note:
            self.progress(f"model {req.model.name}: {self.source.note}")
        specs = self.source.inputs
        self.calibration = check_data(calibration_raw, specs, "calibration", req.calibration)
        self.validation = check_data(
            load_npz(req.validation, "validation"), specs, "validation", req.validation
        )
        self.reference = (
            check_data(load_npz(req.reference, "reference"), specs, "reference", req.reference)
            if req.reference
            else self.calibration
        )
        rows = next(iter(self.validation.values())).shape[0]
        self.labels = load_labels(req.labels, rows) if req.labels else None

    def _run_reference(self) -> None:
        fp32 = self.source.onnx_bytes
        probe = Signature(
            inputs=tuple(
                TensorSpec(name=s.name, runtime_name=s.name, shape=(-1,))
                for s in self.source.inputs
            ),
            outputs=tuple(
                TensorSpec(name=n, runtime_name=n, shape=(-1,)) for n in self.source.output_names
            ),
            batch=self.source.batch,
        )
        try:
            model = load_model_bytes("onnxruntime", fp32, probe)
            self.ref_validation = score_rows(model, self.validation)
            self.ref_reference = score_rows(model, self.reference)
        except ControlPlaneError:
            raise
        except Exception as exc:  # onnxruntime names the op it has no kernel for
            raise CompileError(
                f"model {self.request.model}: fp32 reference does not run: {exc}"
            ) from exc
        self.onnx_signature = _onnx_signature(self.source, self.ref_validation)
        self._attention = attention_node(self.source.onnx_bytes)
        if self.request.task is not None:
            self.task: Task = self.request.task
            self.progress(f"task: {self.task} (--task)")
        else:
            self.task, why = infer_task(self.ref_validation, self.labels)
            self.progress(f"task: {self.task}, inferred: {why}")

    # -- candidates

    def onnx_base(self) -> bytes:
        """What per-channel and mixed int8 quantize: the fp32 graph with onnxruntime's
        transformer fusions when it has attention (and they apply), else the source."""
        if self._fused is None:
            self._fused = self.source.onnx_bytes
            if self._attention is not None:
                fused = fuse_transformer(self.source.onnx_bytes)
                if fused is None:
                    self.progress("  transformer fusion: no attention block recognised")
                else:
                    self._fused, stats = fused
                    done = ", ".join(f"{op} x{n}" for op, n in stats.items())
                    self.progress(f"  transformer fusion before quantizing: {done}")
        return self._fused

    def _build(self, fmt: str, recipe: str) -> Candidate:
        cand = Candidate(key=f"{fmt}/{recipe}", format=fmt, recipe=recipe)
        if recipe == "static_int8" and self._attention is not None:
            cand.skipped = (
                f"not built: static activation quantization breaks attention ({self._attention}) "
                "and is not faster there; see docs/compiler.md"
            )
            self.progress(f"  {cand.key} {cand.skipped}")
            return cand
        self.progress(f"building {cand.key}")
        try:
            if fmt == "onnx":
                base = self.onnx_base() if recipe in FUSED_RECIPES else self.source.onnx_bytes
                cand.model_bytes = build_onnx(base, recipe, self.calibration, self.source.batch)
                cand.signature = self.onnx_signature
            else:
                if self._tflite is None:
                    module = torch_module_for(self.source)
                    self._tflite = TfliteBuilder(
                        module,
                        [s.name for s in self.source.inputs],
                        list(self.ref_validation),
                        [s.dtype for s in self.source.inputs],
                    )
                cand.model_bytes, signature = self._tflite.build(recipe, self.calibration)
                # a fixed-batch source is converted at that batch: the package declares it
                cand.signature = signature.model_copy(update={"batch": self.source.batch})
            runtime = "onnxruntime" if fmt == "onnx" else "litert"
            loaded = load_model_bytes(runtime, cand.model_bytes, cand.signature)
            cand.outputs = score_rows(loaded, self.validation)
        except ControlPlaneError as exc:
            cand.error = str(exc)
        except Exception as exc:  # a runtime that cannot run what a tool chain produced
            cand.error = f"{cand.key}: does not run: {str(exc).strip().splitlines()[0]}"
        if cand.error:
            self.progress(f"  {cand.key} failed: {cand.error}")
        return cand

    def _fidelity(
        self, outputs: Mapping[str, np.ndarray], profile: HardwareProfile
    ) -> FidelityReport:
        return fidelity_report(
            self.ref_validation, outputs, self.task, profile.budgets, labels=self.labels
        )

    def _latency(self, cand: Candidate, profile: HardwareProfile) -> Benchmark:
        threads = profile.runtime.threads
        if threads not in cand.latency:
            assert cand.signature is not None
            sample = {k: v[:1] for k, v in self.validation.items()}
            cand.latency[threads] = measure_latency(
                "onnxruntime" if cand.format == "onnx" else "litert",
                cand.model_bytes,
                cand.signature,
                sample,
                threads=threads,
                runs=profile.benchmark.runs,
            )
        return cand.latency[threads]

    # -- per profile

    def _choose(self, profile: HardwareProfile) -> ProfileOutcome:
        budgets = profile.budgets
        rows: list[dict[str, Any]] = []
        passing: list[tuple[Candidate, FidelityReport]] = []
        for spec in profile.compile.candidates:
            cand = (
                tune_mixed(self, profile, spec.format)
                if spec.recipe == "mixed_int8"
                else self.candidates[spec.key]
            )
            row: dict[str, Any] = {"candidate": cand.key, "size_bytes": cand.size_bytes or None}
            if cand.trials:
                row["trials"] = cand.trials
            rows.append(row)
            if cand.skipped:
                row.update(status="skipped", reason=cand.skipped)
                continue
            if cand.error:
                row.update(status="failed", reason=cand.error)
                continue
            report = self._fidelity(cand.outputs, profile)
            if cand.float_nodes:
                report = report.model_copy(update={"float_nodes": cand.float_nodes})
            row["fidelity"] = report.model_dump(mode="json")
            reasons = list(report.reasons)
            if cand.size_bytes > budgets.max_package_bytes:
                reasons.append(f"size {cand.size_bytes} over budget {budgets.max_package_bytes}")
            if cand.size_bytes > budgets.max_memory_bytes:
                reasons.append(f"weights alone ({cand.size_bytes} B) exceed the memory budget")
            if reasons:
                row.update(status="rejected", reason="; ".join(reasons))
                continue
            row.update(status="within budget")
            passing.append((cand, report))
        if not passing:
            why = "; ".join(f"{r['candidate']}: {r['reason']}" for r in rows)
            return ProfileOutcome(profile.id, rows, f"no candidate fits: {why}")

        mismatches = profile.host_mismatches(self.host)
        if mismatches:
            cand, report = passing[0]
            decision = (
                f"{cand.key}: first within budget in preference order; not benchmarked "
                f"here ({'; '.join(mismatches)})"
            )
            return ProfileOutcome(profile.id, rows, decision, chosen=cand, fidelity=report)

        timed = [(cand, report, self._latency(cand, profile)) for cand, report in passing]
        by_key = {row["candidate"]: row for row in rows}
        for cand, _, bench in timed:
            by_key[cand.key]["latency_ms"] = bench.latency_ms_p50
        fastest = min(timed, key=lambda t: t[2].latency_ms_p50)
        # the first in preference order that is within the margin of the fastest
        bound = fastest[2].latency_ms_p50 / (1.0 - SPEEDUP_MARGIN)
        chosen = next(t for t in timed if t[2].latency_ms_p50 <= bound)
        if chosen is fastest:
            decision = (
                f"{chosen[0].key}: fastest within budget ({chosen[2].latency_ms_p50:.3f} ms p50"
            )
        else:
            decision = (
                f"{chosen[0].key}: earlier in preference order and within "
                f"{SPEEDUP_MARGIN:.0%} of the fastest ({chosen[2].latency_ms_p50:.3f} ms p50 vs "
                f"{fastest[2].latency_ms_p50:.3f} ms for {fastest[0].key}"
            )
        others = [f"{c.key} {b.latency_ms_p50:.3f} ms" for c, _, b in timed if c is not chosen[0]]
        decision += f"; measured {', '.join(others)})" if others else ")"
        by_key[chosen[0].key]["status"] = "chosen"
        return ProfileOutcome(
            profile.id, rows, decision, chosen=chosen[0], fidelity=chosen[1], benchmark=chosen[2]
        )

    def _for_runtime(self, cand: Candidate, profile: HardwareProfile) -> Candidate:
        """The chosen model as the profile's oldest runtime loads it (onnx_compat.py)."""
        signature = cand.signature
        assert signature is not None
        fitted = fit_runtime(
            cand,
            profile.runtime,
            lambda data: score_rows(
                load_model_bytes("onnxruntime", data, signature), self.validation
            ),
        )
        if fitted is not cand:
            ir, opsets = opsets_of(fitted.model_bytes)
            self.progress(f"  {profile.id}: {cand.key} written as ONNX IR {ir}, opsets {opsets}")
        return fitted

    def run(self) -> list[ProfileOutcome]:
        req = self.request
        if not req.profiles:
            raise InvalidInput("no hardware profile selected")
        self._load()
        self._run_reference()
        self.stats = reference_statistics(
            self.reference,
            self.ref_reference,
            self.task,
            source=(req.reference or req.calibration).name,
            unknown_id=req.unknown_id,
        )
        keys = list(
            dict.fromkeys(
                (spec.format, spec.recipe)
                for profile in req.profiles
                for spec in profile.compile.candidates
                if spec.recipe != "mixed_int8"
            )
        )
        for i, (fmt, recipe) in enumerate(keys, 1):
            if f"{fmt}/{recipe}" not in self.candidates:
                self.progress(f"candidate {i}/{len(keys)}: {fmt}/{recipe}")
                self.candidates[f"{fmt}/{recipe}"] = self._build(fmt, recipe)
        outcomes = []
        for profile in req.profiles:
            self.progress(f"choosing for {profile.id}")
            outcomes.append(self._choose(profile))
        failed = [o for o in outcomes if o.chosen is None]
        if failed:
            raise CompileError(
                "; ".join(f"profile {o.profile}: {o.decision}" for o in failed)
                + " (no package written)"
            )
        packages = []
        by_id = {p.id: p for p in req.profiles}
        for outcome in outcomes:
            assert outcome.chosen is not None
            outcome.chosen = self._for_runtime(outcome.chosen, by_id[outcome.profile])
            manifest = make_manifest(self, by_id[outcome.profile], outcome)
            data = build_package(manifest, outcome.chosen.model_bytes, self.key)
            outcome.manifest = manifest
            outcome.path = req.out_dir / package_filename(manifest)
            outcome.package_sha256 = hashlib.sha256(data).hexdigest()
            outcome.package_bytes = len(data)
            packages.append((outcome.path, data))
        for path, data in packages:
            write_atomic(path, data)
            self.progress(f"wrote {path}")
        return outcomes


def compile_model(
    request: CompileRequest, progress: Progress | None = None
) -> list[ProfileOutcome]:
    return Compiler(request, progress).run()
