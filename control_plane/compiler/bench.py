"""Measure a candidate's latency on this host through the device runtime."""

from __future__ import annotations

import functools
import platform
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from edge_agent.core.manifest import Benchmark, Signature
from edge_agent.runtime import load_model_bytes

WARMUP_RUNS = 5
MAX_SECONDS = 3.0


@functools.cache
def host_description() -> str:
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.lower().startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    return f"{platform.machine()} {model}".strip()


def measure_latency(
    runtime: str,
    model_bytes: bytes,
    signature: Signature,
    sample: Mapping[str, np.ndarray],
    *,
    threads: int,
    runs: int,
    providers: tuple[str, ...] = (),
) -> Benchmark:
    """p50/p95 of ``predict`` at the sample's batch size, after a warm-up; bounded in time."""
    model = load_model_bytes(runtime, model_bytes, signature, threads=threads, providers=providers)
    for _ in range(WARMUP_RUNS):
        model.predict(sample)
    timings: list[float] = []
    deadline = time.perf_counter() + MAX_SECONDS
    while len(timings) < runs and (len(timings) < 5 or time.perf_counter() < deadline):
        start = time.perf_counter_ns()
        model.predict(sample)
        timings.append((time.perf_counter_ns() - start) / 1e6)
    values = np.asarray(timings)
    return Benchmark(
        batch=int(next(iter(sample.values())).shape[0]),
        latency_ms_p50=round(float(np.percentile(values, 50)), 4),
        latency_ms_p95=round(float(np.percentile(values, 95)), 4),
        runs=len(timings),
        threads=threads,
        host=host_description(),
    )
