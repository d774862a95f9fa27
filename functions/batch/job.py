"""A batch scoring job: read in chunks, score locally or on Dask, write in input order.

    summary = run_batch(BatchJob(package, public_key, Path("in/"), Path("out.csv")))

Memory is bounded: the reader holds one chunk, at most ``in_flight`` chunks
are out being scored (Dask) and results are written in input order as they
arrive. ``dask`` is ``None`` (this process), ``"local:N"`` (a LocalCluster of N
worker processes started for the job) or a scheduler address
(``tcp://host:8786``). Each worker loads and verifies the package once.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_agent.package import load_public_key, open_package
from edge_agent.reporting import Reporter
from functions.batch.output import ErrorWriter, PredictionWriter, TelemetrySink, sidecar
from functions.batch.readers import BadRow, Chunk, input_files, read_chunks
from functions.batch.scoring import ChunkResult, ScorerSpec, loads, score_chunk

Progress = Callable[[int, int, str], None]
"""Called after each chunk with (rows scored, bad rows, file)."""


class BadRowError(Exception):
    """``--fail-fast``: the first malformed row stops the job."""

    def __init__(self, row: BadRow) -> None:
        super().__init__(f"{row.file}: row {row.row}: {row.reason}")
        self.row = row


@dataclass
class BatchJob:
    package: Path
    public_key: Path
    input: Path
    output: Path
    chunk_rows: int = 4096
    fail_fast: bool = False
    dask: str | None = None
    job_id: str | None = None
    device_id: str = "batch"
    reporter: Reporter | None = None
    progress: Progress | None = None
    in_flight: int = 4


@dataclass
class BatchSummary:
    job_id: str
    files: int = 0
    rows: int = 0
    bad_rows: int = 0
    windows: int = 0
    output: str = ""
    errors: str | None = None
    telemetry: str | None = None
    workers: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _job_id(sha256: str, files: list[Path]) -> str:
    digest = hashlib.sha256(sha256.encode())
    for f in files:
        digest.update(str(f.resolve()).encode())
    return digest.hexdigest()[:12]


def _local(spec: ScorerSpec, job: str, chunks: Iterator[Chunk]) -> Iterator[ChunkResult]:
    for chunk in chunks:
        yield score_chunk(spec, job, chunk)


def _client(address: str) -> tuple[Any, Any]:
    from distributed import Client, LocalCluster

    if address.startswith("local:"):
        workers = int(address.removeprefix("local:") or "2")
        cluster = LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",  # a local cluster serves this machine only
            dashboard_address=":0",  # no fixed port: two local jobs at once must not collide
            env={"PYTHONPATH": os.environ.get("PYTHONPATH", "")},
        )
        return Client(cluster), cluster  # type: ignore[no-untyped-call]
    return Client(address), None  # type: ignore[no-untyped-call]


def _on_dask(
    client: Any, spec: ScorerSpec, job: str, chunks: Iterator[Chunk], in_flight: int
) -> Iterator[ChunkResult]:
    """Submit chunks with at most ``in_flight`` outstanding; yield results in input order."""
    pending: deque[Any] = deque()
    for chunk in chunks:
        pending.append(client.submit(score_chunk, spec, job, chunk, pure=False))
        if len(pending) >= in_flight:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def run_batch(job: BatchJob) -> BatchSummary:
    files = input_files(job.input)
    checked = open_package(job.package, load_public_key(job.public_key))  # fail here, not later
    spec = ScorerSpec(str(job.package.resolve()), str(job.public_key.resolve()), checked.sha256)
    tensor = checked.manifest.signature.inputs[0]
    job_id = job.job_id or _job_id(checked.sha256, files)
    summary = BatchSummary(job_id, files=len(files), output=str(job.output))

    def chunks() -> Iterator[Chunk]:
        for index, path in enumerate(files):
            yield from read_chunks(path, index, tensor, job.chunk_rows)

    writer = PredictionWriter(job.output)
    errors = ErrorWriter(sidecar(job.output, ".errors.csv"))
    telemetry_path = None if job.reporter else sidecar(job.output, ".telemetry.jsonl")
    sink = TelemetrySink(job.device_id, job.reporter, telemetry_path)
    client = cluster = None
    try:
        if job.dask:
            client, cluster = _client(job.dask)
            summary.workers = len(client.scheduler_info()["workers"])
            in_flight = max(job.in_flight, 2 * summary.workers)
            results = _on_dask(client, spec, job_id, chunks(), in_flight)
        else:
            results = _local(spec, job_id, chunks())
        for result in results:
            bad = list(result.bad)
            if result.error is not None:  # the runtime refused the whole chunk
                bad += [BadRow(result.file, int(n), result.error) for n in result.row_numbers]
            errors.write(sorted(bad, key=lambda b: b.row))
            if bad and job.fail_fast:
                raise BadRowError(min(bad, key=lambda b: b.row))
            writer.write(result.file, result.row_numbers, result.prediction_ids, result.outputs)
            sink.put(result.window)
            summary.rows += len(result.prediction_ids)
            summary.bad_rows += len(bad)
            if job.progress is not None:
                job.progress(summary.rows, summary.bad_rows, result.file)
        if client is not None:
            summary.extra["loads_per_worker"] = client.run(loads)
    finally:
        writer.close()
        errors.close()
        sink.close()
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    summary.windows = sink.windows
    summary.errors = str(errors.path) if errors.count else None
    summary.telemetry = str(telemetry_path) if telemetry_path else None
    if job.reporter is not None:
        job.reporter.flush()
    return summary
