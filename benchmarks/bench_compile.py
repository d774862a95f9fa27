"""Issue #2: size, latency, fidelity and compile time of every candidate, per host profile.

The three models of :func:`benchmarks.common.prepare_workloads` go through the
real pipeline (:class:`Compiler`) once per hardware profile this host can run,
so each profile's compile time is its own. Every candidate built is then timed
at batch 1 beside the fp32 of its format, in turns
(:func:`~benchmarks.common.interleaved_latency`), so ratios come from one run
on one machine state; fidelity is the compiler's own report on held-out data.
"""

from __future__ import annotations

import logging
import platform
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.common import (
    Timed,
    Workload,
    interleaved_latency,
    markdown_table,
    prepare_workloads,
    tool_versions,
    write_results,
)
from benchmarks.realworld_score import render as render_realworld
from benchmarks.realworld_score import run_realworld
from control_plane.compiler.bench import host_description
from control_plane.compiler.pipeline import TOOLS, Compiler, CompileRequest
from control_plane.core.hardware import HardwareProfile, load_profiles
from control_plane.errors import ControlPlaneError
from control_plane.signing import generate_keypair
from edge_agent.host import detect_host

logger = logging.getLogger(__name__)

PROFILES_DIR = Path(__file__).resolve().parent.parent / "hardware-profiles"
COMMAND = ".venv/bin/python -m benchmarks compile"


@dataclass(frozen=True)
class Target:
    """One of issue #2's targets: ``field`` of ``candidate`` (None: of the profile)."""

    label: str
    short: str  # the word in the per-candidate table's "targets" column
    models: tuple[str, ...]
    candidate: str | None
    field: str
    limit: float
    at_most: bool

    def check(self, value: float | None) -> bool:
        if value is None:
            return False
        return value <= self.limit if self.at_most else value >= self.limit


_NET, _ONNX, _TFLITE = ("mobilenet",), "onnx/static_int8", "tflite/static_int8"
TARGETS = (
    Target("ONNX static int8 size x fp32", "size", _NET, _ONNX, "size_ratio", 0.30, True),
    Target("ONNX static int8 latency x fp32", "latency", _NET, _ONNX, "latency_ratio", 0.65, True),
    Target("ONNX static int8 agreement", "agreement", _NET, _ONNX, "top1_agreement", 0.99, False),
    Target("TFLite static int8 size x fp32", "size", _NET, _TFLITE, "size_ratio", 0.30, True),
    Target(
        "TFLite static int8 agreement", "agreement", _NET, _TFLITE, "top1_agreement", 0.98, False
    ),
    Target(
        "compile s", "compile", ("digits-mlp", "digits-cnn"), None, "compile_seconds", 30.0, True
    ),
)


def _ratio(value: float | None, base: float | None) -> float | None:
    return round(value / base, 3) if value and base else None


def bench_profile(
    workload: Workload, profile: HardwareProfile, key: Path, out: Path
) -> dict[str, Any]:
    """Compile ``workload`` for one profile, then time every candidate it built."""
    request = CompileRequest(
        model=workload.weights,
        calibration=workload.data["calibration"],
        validation=workload.data["validation"],
        labels=workload.data["labels"],
        profiles=[profile],
        out_dir=out,
        signing_key=key,
        model_name=workload.name,
        model_version="1",
        factory=workload.factory,
    )
    compiler = Compiler(request, progress=lambda message: logger.debug("%s", message))
    record: dict[str, Any] = {
        "model": workload.name,
        "profile": profile.id,
        "profile_candidates": [spec.key for spec in profile.compile.candidates],
    }
    started = time.perf_counter()
    try:
        outcome = compiler.run()[0]
    except ControlPlaneError as exc:
        record.update(compile_seconds=round(time.perf_counter() - started, 2), error=str(exc))
        return record
    record["compile_seconds"] = round(time.perf_counter() - started, 2)
    assert outcome.chosen is not None
    record.update(
        chosen=outcome.chosen.key, decision=outcome.decision, package_bytes=outcome.package_bytes
    )

    built = {**compiler.candidates, **{c.key: c for c in compiler._mixed_cache.values()}}
    timed = {
        k: Timed("onnxruntime" if c.format == "onnx" else "litert", c.model_bytes, c.signature)
        for k, c in built.items()
        if not c.error and not c.skipped and c.signature is not None and c.model_bytes
    }
    sample = {name: rows[:1] for name, rows in compiler.validation.items()}
    latency = interleaved_latency(timed, sample, threads=profile.runtime.threads)
    record["candidates"] = []
    for row in outcome.rows:
        cand = built[row["candidate"]]
        fp32 = built.get(f"{cand.format}/fp32")
        fidelity = row.get("fidelity") or {}
        metric = fidelity.get("metric") or {}
        lat, base = latency.get(cand.key), latency.get(f"{cand.format}/fp32")
        record["candidates"].append(
            {
                "candidate": cand.key,
                "status": row["status"],
                "reason": row.get("reason"),
                "size_bytes": cand.size_bytes or None,
                "size_ratio": _ratio(cand.size_bytes, fp32.size_bytes if fp32 else None),
                "latency_ms_p50": round(lat.p50_ms, 4) if lat else None,
                "latency_ms_p95": round(lat.p95_ms, 4) if lat else None,
                "latency_runs": lat.runs if lat else None,
                "latency_ratio": _ratio(lat.p50_ms if lat else None, base.p50_ms if base else None),
                "top1_agreement": fidelity.get("top1_agreement"),
                "accuracy_fp32": metric.get("fp32"),
                "accuracy_delta": metric.get("delta"),
                "max_abs_error": fidelity.get("max_abs_error"),
            }
        )
    return record


def evaluate(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One verdict per (target, model, profile) that the target applies to."""
    verdicts = []
    for target in TARGETS:
        for record in (r for r in records if r["model"] in target.models):
            value = record.get(target.field)
            if target.candidate is not None:
                rows = [
                    r for r in record.get("candidates", []) if r["candidate"] == target.candidate
                ]
                if target.candidate not in record["profile_candidates"]:
                    continue
                value = rows[0].get(target.field) if rows else None
            verdicts.append(
                {
                    "target": target.label,
                    "short": target.short,
                    "model": record["model"],
                    "profile": record["profile"],
                    "candidate": target.candidate,
                    "value": value,
                    "limit": f"{'<=' if target.at_most else '>='} {target.limit:g}",
                    "passed": target.check(value),
                }
            )
    return verdicts


def run(results_dir: Path) -> str:
    started = time.perf_counter()
    host = detect_host()
    every = load_profiles(PROFILES_DIR)
    profiles = [p for p in every.values() if not p.host_mismatches(host)]
    logger.info("profiles runnable here: %s", ", ".join(p.id for p in profiles))
    records = []
    with tempfile.TemporaryDirectory(prefix="fleetcast-bench-") as tmp:
        key, _ = generate_keypair(Path(tmp) / "keys")
        for workload in prepare_workloads(Path(tmp)):
            for profile in profiles:
                logger.info("compiling %s for %s", workload.name, profile.id)
                record = bench_profile(workload, profile, key, Path(tmp) / "packages")
                record.update(params=workload.params, description=workload.description)
                logger.info(
                    "  %.1f s: %s",
                    record["compile_seconds"],
                    record.get("chosen", record.get("error")),
                )
                records.append(record)
        # issue #8: the BERT-sized encoder and the diabetes regressor
        realworld = run_realworld({p.id: p for p in profiles}, key)
    data = {
        "benchmark": "compile",
        "command": COMMAND,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": host_description(),
        "python": platform.python_version(),
        "tools": tool_versions(("fleetcast", *TOOLS)),
        "profiles_skipped": sorted(set(every) - {p.id for p in profiles}),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "targets": evaluate(records),
        "results": records,
        "realworld": realworld,
    }
    markdown = render(data) + "\n\n" + "\n\n".join(render_realworld(realworld))
    write_results(results_dir, "compile", markdown, data)
    return markdown


# ---------------------------------------------------------------- markdown


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _candidate_row(
    record: dict[str, Any], c: dict[str, Any], verdicts: list[dict[str, Any]]
) -> list[str]:
    marks = [
        f"{v['short']} {'PASS' if v['passed'] else 'FAIL'}"
        for v in verdicts
        if (v["model"], v["profile"], v["candidate"])
        == (record["model"], record["profile"], c["candidate"])
    ]
    delta = c["accuracy_delta"]
    kib = c["size_bytes"] / 1024 if c["size_bytes"] else None
    return [
        record["model"], record["profile"], c["candidate"], c["status"], _num(kib, 1),
        _num(c["size_ratio"], 2), _num(c["latency_ms_p50"]), _num(c["latency_ratio"], 2),
        _num(c["top1_agreement"]), "-" if delta is None else f"{100 * delta:+.1f}",
        ", ".join(marks) or "-",
    ]  # fmt: skip


def render(data: dict[str, Any]) -> str:
    """The markdown report of :func:`run`'s JSON."""
    records, verdicts = data["results"], data["targets"]
    models = {r["model"]: r for r in records}
    accuracy = {
        r["model"]: c["accuracy_fp32"]
        for r in records
        for c in r.get("candidates", [])
        if c["candidate"].endswith("/fp32")
    }
    sections = [
        "# Compiler benchmark (issue #2)",
        f"`{data['command']}` (`make bench` runs every benchmark) on {data['host']}, "
        f"{data['created_at']}, {data['wall_seconds']:.0f} s in all. Profiles this host cannot "
        f"run, so not measured: {', '.join(data['profiles_skipped']) or 'none'}.",
        "Latency: p50 of `predict` at batch 1 with the profile's thread count through the "
        "device runtime, each candidate timed in turns with the fp32 of its format; ratios "
        "are to that fp32 in the same run. Agreement: top-1 of the candidate vs fp32 on the "
        "held-out validation set; accuracy delta in points against its labels.",
        "## Targets",
        markdown_table(
            ["target", "model", "profile", "measured", "limit", "verdict"],
            [
                [
                    v["target"],
                    v["model"],
                    v["profile"],
                    _num(v["value"]),
                    v["limit"],
                    "PASS" if v["passed"] else "FAIL",
                ]
                for v in verdicts
            ],
        ),  # fmt: skip
        "## Models",
        markdown_table(
            ["model", "architecture", "parameters", "fp32 accuracy (held out)"],
            [
                [name, r["description"], f"{r['params']:,}", _num(accuracy.get(name))]
                for name, r in models.items()
            ],
        ),
        "## Every candidate",
        markdown_table(
            [
                "model",
                "profile",
                "candidate",
                "status",
                "KiB",
                "size x fp32",
                "p50 ms",
                "p50 x fp32",
                "top-1 agreement",
                "acc delta (pp)",
                "targets",
            ],
            [_candidate_row(r, c, verdicts) for r in records for c in r.get("candidates", [])],
        ),  # fmt: skip
        "## Compile time and choice per profile",
        markdown_table(
            ["model", "profile", "compile s", "chosen", "decision"],
            [
                [
                    r["model"],
                    r["profile"],
                    _num(r["compile_seconds"], 1),
                    r.get("chosen", "-"),
                    r.get("decision", r.get("error", "")),
                ]
                for r in records
            ],
        ),  # fmt: skip
    ]
    return "\n\n".join(sections)
