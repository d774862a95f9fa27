"""Score chunks with a verified package: the same function locally and on Dask workers.

:func:`score_chunk` runs where the chunk is scored (this process, or a Dask
worker). Each process loads and verifies the package once (:func:`scorer`
caches it by its spec, and counts loads in :data:`LOADS`); each chunk is one
scoring call, and its telemetry window is closed with the chunk, so the windows
do not depend on where, or in which order, the chunks ran. Prediction ids are
``JOB:FILE_INDEX:ROW``: the same for the same job wherever it runs.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.errors import EdgeError
from edge_agent.runtime import Model
from functions.batch.readers import BadRow, Chunk

LOADS = 0
"""Packages this process loaded and verified (one per spec; the Dask test reads it)."""
_models: dict[ScorerSpec, Model] = {}
_lock = threading.Lock()


@dataclass(frozen=True)
class ScorerSpec:
    package: str
    public_key: str
    sha256: str
    """The package file's sha256, checked again by every process that loads it."""
    threads: int = 1


@dataclass
class ChunkResult:
    file: str
    file_index: int
    index: int
    row_numbers: np.ndarray
    prediction_ids: list[str]
    outputs: dict[str, np.ndarray]
    bad: list[BadRow]
    window: dict[str, Any] | None
    error: str | None = None


def scorer(spec: ScorerSpec) -> Model:
    """This process's model for ``spec``: verified (signature, hashes, profile, self-test) once."""
    global LOADS
    with _lock:
        model = _models.get(spec)
        if model is None:
            from functions.core import FunctionConfig, verified_model

            model = verified_model(
                FunctionConfig(
                    Path(spec.package),
                    Path(spec.public_key),
                    expected_sha256=spec.sha256,
                    threads=spec.threads,
                )
            )
            _models[spec] = model
            LOADS += 1
        return model


def loads() -> int:
    return LOADS


def score_chunk(spec: ScorerSpec, job: str, chunk: Chunk) -> ChunkResult:
    model = scorer(spec)
    name = model.manifest.signature.inputs[0].name
    ids = [f"{job}:{chunk.file_index}:{int(n)}" for n in chunk.row_numbers]
    outputs: dict[str, np.ndarray] = {}
    error = None
    window = None
    with _lock:  # one chunk at a time per process: its window holds exactly its rows
        if len(chunk.rows):
            try:
                outputs = model.predict({name: chunk.rows})
            except EdgeError as exc:
                error = str(exc)
        if model.telemetry is not None and model.telemetry.pending_requests():
            window = model.telemetry.close_window("", 0)
    return ChunkResult(
        chunk.file,
        chunk.file_index,
        chunk.index,
        chunk.row_numbers,
        ids if error is None else [],
        outputs,
        chunk.bad,
        window,
        error,
    )
