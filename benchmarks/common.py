"""What the benchmarks share: the models and their data, latency timing, tables.

The models (:func:`prepare_workloads`):

- ``digits-mlp`` and ``digits-cnn``: trained on scikit-learn's digits (1,400
  rows), calibrated on 256 training rows, validated on the 397 held out.
- ``mobilenet``: ``digits.mobilenet_like(width=32, blocks=10)``, MobileNet v1's
  channel ladder (32 to 1024) on 3x96x96 input. It is trained for a few epochs
  on :func:`gratings` (calibration and validation are 200 held-out images
  each) rather than left at random init: a random net sends every image to
  nearly the same logits, so top-1 agreement there measures noise on
  near-ties (about 50%, even for weight-only int8), not the recipe.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from control_plane.examples import digits
from edge_agent.core.manifest import Signature
from edge_agent.runtime import load_model_bytes

logger = logging.getLogger(__name__)

WARMUP_RUNS = 10
MOBILENET_EPOCHS = 6


# ---------------------------------------------------------------- data


def smoothed_noise(rng: np.random.Generator, rows: int, size: int, kernel: int = 9) -> np.ndarray:
    """Gaussian noise box-filtered to blobs ``kernel`` pixels wide, unit variance, NCHW."""
    import torch

    noise = torch.from_numpy(rng.standard_normal((rows, 3, size, size)).astype(np.float32))
    smooth = torch.nn.functional.avg_pool2d(noise, kernel, 1, kernel // 2)
    return (smooth / smooth.std()).numpy()


def gratings(rows: int, seed: int, size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """A 10-class image task: 5 orientations x 2 spatial frequencies of a sine grating.

    Each image has a random phase, colour and +-15% frequency, over smoothed
    noise, so a conv net has to find oriented edges to tell the classes apart.

    Returns:
        images shaped (rows, 3, size, size) float32, labels (rows,) int64.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, rows)
    theta = (labels % 5) * np.pi / 5 + rng.normal(0.0, 0.05, rows)
    freq = np.where(labels < 5, 2.0, 5.0) * rng.uniform(0.85, 1.15, rows)
    phase = rng.uniform(0.0, 2 * np.pi, rows)
    axis = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    yy, xx = np.meshgrid(axis, axis, indexing="ij")
    along = xx[None] * np.cos(theta)[:, None, None] + yy[None] * np.sin(theta)[:, None, None]
    wave = np.sin(np.pi * freq[:, None, None] * along + phase[:, None, None])
    colour = rng.uniform(0.5, 1.5, (rows, 3)).astype(np.float32)
    images = colour[:, :, None, None] * wave[:, None] + 0.5 * smoothed_noise(rng, rows, size)
    return images.astype(np.float32), labels.astype(np.int64)


def train_minibatch(
    module: Any, x: np.ndarray, y: np.ndarray, epochs: int, batch: int = 32, lr: float = 3e-3
) -> Any:
    """Adam on shuffled mini-batches; returns the module in eval mode."""
    import torch

    torch.manual_seed(0)
    inputs, targets = torch.from_numpy(x), torch.from_numpy(y)
    optimiser = torch.optim.Adam(module.parameters(), lr=lr)
    module.train()
    for _ in range(epochs):
        order = torch.randperm(len(inputs))
        for start in range(0, len(inputs), batch):
            rows = order[start : start + batch]
            optimiser.zero_grad()
            loss = torch.nn.functional.cross_entropy(module(inputs[rows]), targets[rows])
            loss.backward()
            optimiser.step()
    return module.eval()


# ---------------------------------------------------------------- models


def mobilenet() -> Any:
    """The ``--factory`` of the MobileNet-sized net: 10 separable blocks, 32 to 1024 channels."""
    return digits.mobilenet_like(width=32, blocks=10, image=96, classes=10)


@dataclass(frozen=True)
class Workload:
    """A trained model saved as a state_dict, with what ``fleetcast compile`` needs beside it."""

    name: str
    description: str
    factory: str
    weights: Path
    data: dict[str, Path]  # calibration, validation, labels (.npz)
    params: int


def _save(module: Any, path: Path) -> int:
    import torch

    torch.save(module.state_dict(), path)
    return sum(int(p.numel()) for p in module.parameters())


def prepare_workloads(workdir: Path) -> list[Workload]:
    """Train the three models and write their weights and data sets under ``workdir``.

    Every model is initialised from a fixed seed, so runs train the same weights.
    """
    import torch

    split = digits.load_split()
    workloads = []
    for name, images in (("digits-mlp", False), ("digits-cnn", True)):
        x = split.images(split.x_train) if images else split.x_train
        torch.manual_seed(0)
        module = digits.train(digits.cnn() if images else digits.mlp(), x, split.y_train)
        data = digits.write_dataset(workdir / name, split, images=images)
        params = _save(module, workdir / name / "model.pt")
        factory = f"control_plane.examples.digits:{'cnn' if images else 'mlp'}"
        what = "2 conv + 2 dense, 1x8x8" if images else "dense 64-128-64-10"
        workloads.append(Workload(name, what, factory, workdir / name / "model.pt", data, params))

    logger.info("training the MobileNet-sized net (%d epochs)", MOBILENET_EPOCHS)
    started = time.perf_counter()
    x_train, y_train = gratings(800, seed=1)
    torch.manual_seed(0)
    module = train_minibatch(mobilenet(), x_train, y_train, epochs=MOBILENET_EPOCHS)
    logger.info("trained in %.0f s", time.perf_counter() - started)
    directory = workdir / "mobilenet"
    directory.mkdir()
    data = {role: directory / f"{role}.npz" for role in ("calibration", "validation", "labels")}
    calibration, _ = gratings(200, seed=2)
    validation, labels = gratings(200, seed=3)
    np.savez(data["calibration"], input=calibration)
    np.savez(data["validation"], input=validation)
    np.savez(data["labels"], labels=labels)
    params = _save(module, directory / "model.pt")
    what = "depthwise-separable, 10 blocks, 3x96x96"
    factory = "benchmarks.common:mobilenet"
    workloads.append(Workload("mobilenet", what, factory, directory / "model.pt", data, params))
    return workloads


# ---------------------------------------------------------------- timing


@dataclass(frozen=True)
class Latency:
    p50_ms: float
    p95_ms: float
    runs: int


@dataclass(frozen=True)
class Timed:
    """One model to time: which runtime, its bytes and its signature."""

    runtime: str
    model_bytes: bytes
    signature: Signature


def interleaved_latency(
    models: Mapping[str, Timed],
    sample: Mapping[str, np.ndarray],
    *,
    threads: int,
    rounds: int = 10,
    runs_per_round: int = 20,
    max_seconds: float = 20.0,
) -> dict[str, Latency]:
    """p50/p95 of ``predict`` on ``sample`` for each model, through the device runtime.

    The models take turns, ``runs_per_round`` calls each per round, with the
    order rotated every round: on a shared machine, load that comes and goes
    then lands on every model alike, so ratios between them stay fair.
    """
    loaded = {
        key: load_model_bytes(t.runtime, t.model_bytes, t.signature, threads=threads)
        for key, t in models.items()
    }
    for model in loaded.values():
        for _ in range(WARMUP_RUNS):
            model.predict(sample)
    timings: dict[str, list[float]] = {key: [] for key in loaded}
    keys = list(loaded)
    deadline = time.perf_counter() + max_seconds
    for round_ in range(rounds):
        if round_ >= 2 and time.perf_counter() > deadline:
            break
        shift = round_ % len(keys)
        for key in keys[shift:] + keys[:shift]:
            model = loaded[key]
            for _ in range(runs_per_round):
                start = time.perf_counter_ns()
                model.predict(sample)
                timings[key].append((time.perf_counter_ns() - start) / 1e6)
    return {
        key: Latency(
            p50_ms=float(np.percentile(values, 50)),
            p95_ms=float(np.percentile(values, 95)),
            runs=len(values),
        )
        for key, values in timings.items()
    }


# ---------------------------------------------------------------- output


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(results_dir: Path, name: str, markdown: str, data: Any) -> None:
    """``<name>.md`` and ``<name>.json`` under ``results_dir``."""
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / f"{name}.md").write_text(markdown + "\n", encoding="utf-8")
    (results_dir / f"{name}.json").write_text(
        json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8"
    )
    logger.info("wrote %s/%s.{md,json}", results_dir, name)


def tool_versions(names: Sequence[str]) -> dict[str, str]:
    """Installed versions of ``names``; those not installed are left out."""
    import importlib.metadata

    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions
