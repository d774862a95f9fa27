"""Small real models on scikit-learn's digits, trained in seconds.

Used by the demo, the tests and the benchmarks; also a worked example of the
``module:factory`` form that ``fleetcast compile --factory`` takes
(``control_plane.examples.digits:mlp``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class DigitsSplit:
    """8x8 digit images scaled to [0, 1]: calibration, validation (held out), reference."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_calibration: np.ndarray
    x_validation: np.ndarray
    y_validation: np.ndarray

    def images(self, x: np.ndarray) -> np.ndarray:
        return x.reshape(-1, 1, 8, 8)


def load_split(seed: int = 0) -> DigitsSplit:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order].astype(np.int64)
    train, val = x[:1400], x[1400:]
    return DigitsSplit(
        x_train=train,
        y_train=y[:1400],
        x_calibration=train[:256],
        x_validation=val,
        y_validation=y[1400:],
    )


def mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10)
    )


def cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


def mobilenet_like(
    width: int = 32, blocks: int = 6, image: int = 96, classes: int = 100
) -> nn.Module:
    """A MobileNet-sized depthwise-separable conv net (random weights; for speed and size)."""

    def separable(cin: int, cout: int, stride: int) -> list[nn.Module]:
        return [
            nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),
            nn.BatchNorm2d(cin),
            nn.ReLU6(),
            nn.Conv2d(cin, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(),
        ]

    layers: list[nn.Module] = [
        nn.Conv2d(3, width, 3, 2, 1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU6(),
    ]
    channels = width
    for i in range(blocks):
        out = channels * 2 if i % 2 == 0 else channels
        layers += separable(channels, out, 2 if i % 2 == 0 else 1)
        channels = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, classes)]
    return nn.Sequential(*layers)


def train(
    model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int = 30, seed: int = 0
) -> nn.Module:
    """Full-batch-ish Adam training; a few seconds on two cores."""
    torch.manual_seed(seed)
    inputs, targets = torch.from_numpy(x), torch.from_numpy(y)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(epochs):
        for start in range(0, len(inputs), 128):
            optimiser.zero_grad()
            loss = nn.functional.cross_entropy(
                model(inputs[start : start + 128]), targets[start : start + 128]
            )
            loss.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
    return model.eval()


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def write_dataset(directory: Path, split: DigitsSplit, images: bool) -> dict[str, Path]:
    """calibration.npz, validation.npz and labels.npz for ``fleetcast compile``."""
    shape = split.images if images else (lambda a: a)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {
        "calibration": directory / "calibration.npz",
        "validation": directory / "validation.npz",
        "labels": directory / "labels.npz",
    }
    np.savez(paths["calibration"], input=shape(split.x_calibration))
    np.savez(paths["validation"], input=shape(split.x_validation))
    np.savez(paths["labels"], labels=split.y_validation)
    return paths
