"""Shared fixtures: real models trained on scikit-learn's digits, signing keys, packages.

Everything here is real: torch trains the models, the compiler builds and signs
the packages, onnxruntime and LiteRT score them.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROFILES_DIR = ROOT / "hardware-profiles"


def pytest_sessionstart(session: pytest.Session) -> None:
    """Fail early when the committed gRPC stubs are missing or differ from their .proto."""
    from proto_support import stale_stubs

    stale = stale_stubs()
    if stale:
        raise pytest.UsageError(
            f"generated gRPC stubs missing or stale ({', '.join(stale)}): run `make protos`"
        )


@pytest.fixture(scope="session")
def edge_packages(
    digits_mlp: TrainedDigits,
    compile_digits: Callable[..., list[object]],
    keys: Keys,
    tmp_path_factory: pytest.TempPathFactory,
) -> object:
    """The digits MLP for onnxruntime and LiteRT, plus variants (see edge_support.py)."""
    from edge_support import build_edge_packages

    return build_edge_packages(digits_mlp, compile_digits, keys, tmp_path_factory.mktemp("edge"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Keys:
    private: Path
    public: Path


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    from control_plane.signing import generate_keypair

    private, public = generate_keypair(tmp_path_factory.mktemp("keys"))
    return Keys(private, public)


@dataclass(frozen=True)
class TrainedDigits:
    """A trained torch model with its data files, ready for `fleetcast compile`."""

    kind: str  # "mlp" or "cnn"
    module: object
    state_dict: Path
    calibration: Path
    validation: Path
    labels: Path
    x_validation: object
    y_validation: object
    fp32_accuracy: float


def _train(kind: str, directory: Path) -> TrainedDigits:
    import torch

    from control_plane.examples import digits

    split = digits.load_split()
    images = kind == "cnn"
    model = digits.mlp() if kind == "mlp" else digits.cnn()
    x_train = split.images(split.x_train) if images else split.x_train
    digits.train(model, x_train, split.y_train, epochs=20 if images else 40)
    paths = digits.write_dataset(directory, split, images=images)
    state = directory / f"{kind}.pt"
    torch.save(model.state_dict(), state)
    x_val = split.images(split.x_validation) if images else split.x_validation
    return TrainedDigits(
        kind=kind,
        module=model,
        state_dict=state,
        calibration=paths["calibration"],
        validation=paths["validation"],
        labels=paths["labels"],
        x_validation=x_val,
        y_validation=split.y_validation,
        fp32_accuracy=digits.accuracy(model, x_val, split.y_validation),
    )


@pytest.fixture(scope="session")
def digits_mlp(tmp_path_factory: pytest.TempPathFactory) -> TrainedDigits:
    return _train("mlp", tmp_path_factory.mktemp("mlp"))


@pytest.fixture(scope="session")
def digits_cnn(tmp_path_factory: pytest.TempPathFactory) -> TrainedDigits:
    return _train("cnn", tmp_path_factory.mktemp("cnn"))


@pytest.fixture(scope="session")
def compile_digits(
    keys: Keys, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., list[object]]:
    """Compile a trained digits model for the given profiles; returns the outcomes."""
    from control_plane.compiler.pipeline import CompileRequest, compile_model
    from control_plane.core.hardware import select_profiles

    def run(trained: TrainedDigits, profiles: list[str], **overrides: object) -> list[object]:
        request = CompileRequest(
            model=trained.state_dict,
            factory=f"control_plane.examples.digits:{trained.kind}",
            calibration=trained.calibration,
            validation=trained.validation,
            labels=trained.labels,
            profiles=select_profiles(PROFILES_DIR, profiles),
            out_dir=tmp_path_factory.mktemp("packages"),
            signing_key=keys.private,
            model_name=f"digits-{trained.kind}",
            model_version="1",
        )
        for name, value in overrides.items():
            object.__setattr__(request, name, value)
        return list(compile_model(request))

    return run
