"""Bad input to `fleetcast compile`: one clear line, non-zero exit, no package left behind."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from control_plane.cli import cli

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def out_dir(tmp_path: Path) -> Path:
    return tmp_path / "out"


def _compile(model: Path, data: Any, keys: Any, out: Path, *extra: str) -> Any:
    args = [
        "compile",
        str(model),
        "--calibration",
        str(data.calibration),
        "--validation",
        str(data.validation),
        "--key",
        str(keys.private),
        "--name",
        "digits",
        "--out",
        str(out),
        *extra,
    ]
    return CliRunner().invoke(cli, args)


def _assert_clean_failure(result: Any, out: Path, *needles: str) -> None:
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not out.exists() or list(out.iterdir()) == []


def _with_factory(trained: Any) -> tuple[str, ...]:
    return ("--factory", f"control_plane.examples.digits:{trained.kind}", "-p", "x86-64-generic")


def test_unknown_profile(digits_mlp: Any, keys: Any, out_dir: Path) -> None:
    result = _compile(digits_mlp.state_dict, digits_mlp, keys, out_dir, "-p", "pdp-11")
    _assert_clean_failure(result, out_dir, "unknown profile(s) pdp-11", "known:")


def test_malformed_profile_file(digits_mlp: Any, keys: Any, out_dir: Path, tmp_path: Path) -> None:
    profiles = tmp_path / "profiles"
    shutil.copytree(ROOT / "hardware-profiles", profiles)
    bad = profiles / "raspberry-pi-4.toml"
    bad.write_text(bad.read_text().replace("threads = 4", "threads = -4"))
    result = _compile(
        digits_mlp.state_dict,
        digits_mlp,
        keys,
        out_dir,
        *_with_factory(digits_mlp),
        "--profiles-dir",
        str(profiles),
    )
    _assert_clean_failure(result, out_dir, "raspberry-pi-4.toml", "runtime.threads")


@pytest.mark.parametrize("suffix", [".onnx", ".pt2", ".pt"])
def test_model_file_that_is_not_a_model(
    digits_mlp: Any, keys: Any, out_dir: Path, tmp_path: Path, suffix: str
) -> None:
    bogus = tmp_path / f"model{suffix}"
    bogus.write_bytes(b"this is a spreadsheet, not a model\n" * 10)
    extra = _with_factory(digits_mlp) if suffix == ".pt" else ("-p", "x86-64-generic")
    result = _compile(bogus, digits_mlp, keys, out_dir, *extra)
    _assert_clean_failure(result, out_dir, str(bogus), "not a")


def test_unknown_model_kind(digits_mlp: Any, keys: Any, out_dir: Path, tmp_path: Path) -> None:
    bogus = tmp_path / "model.h5"
    bogus.write_bytes(b"\x89HDF")
    result = _compile(bogus, digits_mlp, keys, out_dir, "-p", "x86-64-generic")
    _assert_clean_failure(result, out_dir, "unknown kind", ".onnx")


@pytest.mark.parametrize(
    ("array", "needle"),
    [
        (np.zeros((32, 65), np.float32), "shaped ['N', 65] does not fit the model"),
        (np.zeros((32, 64), np.int32), "does not fit the model"),
        (np.where(np.eye(32, 64) > 0, np.nan, 0.5).astype(np.float32), "32 NaN or infinite values"),
    ],
    ids=["shape", "dtype", "nan"],
)
def test_bad_calibration_data(
    digits_mlp: Any, keys: Any, out_dir: Path, tmp_path: Path, array: np.ndarray, needle: str
) -> None:
    path = tmp_path / "calibration.npz"
    np.savez(path, input=array)
    data = type("Data", (), {"calibration": path, "validation": digits_mlp.validation})
    result = _compile(digits_mlp.state_dict, data, keys, out_dir, *_with_factory(digits_mlp))
    _assert_clean_failure(result, out_dir, "calibration data", needle)


def _onnx_with(op: str, domain: str, tmp_path: Path) -> Path:
    """A real tiny ONNX model: Gemm followed by ``op``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(
        np.random.default_rng(0).normal(size=(64, 10)).astype(np.float32), "w"
    )
    nodes = [
        helper.make_node("Gemm", ["input", "w"], ["logits"]),
        helper.make_node(op, ["logits"], ["output"], domain=domain),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 10])],
        initializer=[weights],
    )
    imports = [helper.make_opsetid("", 17)]
    if domain:
        imports.append(helper.make_opsetid(domain, 1))
    model = helper.make_model(graph, opset_imports=imports)
    model.ir_version = 8
    path = tmp_path / f"{op.lower()}.onnx"
    onnx.save(model, str(path))
    return path


def test_op_the_tflite_target_cannot_run(
    digits_mlp: Any, keys: Any, out_dir: Path, tmp_path: Path
) -> None:
    model = _onnx_with("Shrink", "", tmp_path)  # onnxruntime runs it; onnx2torch cannot convert it
    ok = _compile(model, digits_mlp, keys, tmp_path / "ok", "-p", "x86-64-generic", "--json")
    assert ok.exit_code == 0, ok.output
    result = _compile(
        model, digits_mlp, keys, out_dir, "-p", "x86-64-generic", "-p", "x86-64-litert"
    )
    _assert_clean_failure(result, out_dir, "x86-64-litert", "op Shrink", "no package written")


def test_op_no_runtime_knows(digits_mlp: Any, keys: Any, out_dir: Path, tmp_path: Path) -> None:
    model = _onnx_with("Frobnicate", "com.example", tmp_path)
    result = _compile(model, digits_mlp, keys, out_dir, "-p", "x86-64-generic")
    _assert_clean_failure(result, out_dir, "com.example:Frobnicate")


def test_missing_signing_key(digits_mlp: Any, keys: Any, out_dir: Path, tmp_path: Path) -> None:
    absent = type("Keys", (), {"private": tmp_path / "nope.key"})
    result = _compile(
        digits_mlp.state_dict, digits_mlp, absent, out_dir, *_with_factory(digits_mlp)
    )
    _assert_clean_failure(result, out_dir, "nope.key", "fleetcast keys generate")


def test_json_output_is_one_object_per_package(digits_mlp: Any, keys: Any, out_dir: Path) -> None:
    import json

    result = _compile(
        digits_mlp.state_dict,
        digits_mlp,
        keys,
        out_dir,
        "--factory",
        "control_plane.examples.digits:mlp",
        "-p",
        "x86-64-generic",
        "-p",
        "raspberry-pi-4",
        "--labels",
        str(digits_mlp.labels),
        "--json",
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [line["profile"] for line in lines] == ["x86-64-generic", "raspberry-pi-4"]
    for line in lines:
        for key in (
            "path",
            "profile",
            "format",
            "recipe",
            "size_bytes",
            "fidelity",
            "latency_ms",
            "sha256",
        ):
            assert key in line
        assert Path(line["path"]).stat().st_size == line["size_bytes"]
    assert lines[0]["latency_ms"] is not None and lines[1]["latency_ms"] is None
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(Path(x["path"]).name for x in lines)
