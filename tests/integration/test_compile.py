"""The compiler end to end on real models trained here: fidelity, packages, signing."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from control_plane.cli import cli
from control_plane.compiler.package import build_package
from control_plane.core.hardware import load_profiles
from control_plane.signing import load_private_key
from edge_agent.core.device_manifest import to_builtins
from edge_agent.errors import PackageError
from edge_agent.host import detect_host
from edge_agent.package import load_public_key, open_package, read_package
from edge_agent.runtime import open_model

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PROFILES = load_profiles(ROOT / "hardware-profiles")
HOST = detect_host()
RUNNABLE = sorted(p.id for p in PROFILES.values() if not p.host_mismatches(HOST))


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.argmax(axis=1) == b.argmax(axis=1)).mean())


def _fp32_scores(trained: Any) -> np.ndarray:
    import torch

    with torch.no_grad():
        return trained.module(torch.from_numpy(trained.x_validation)).numpy()


@pytest.fixture(scope="module")
def mlp_outcomes(digits_mlp: Any, compile_digits: Any) -> dict[str, Any]:
    return {o.profile: o for o in compile_digits(digits_mlp, ["all"])}


def test_this_host_runs_the_x86_profiles() -> None:
    assert {"x86-64-generic", "x86-64-avx512-vnni", "aws-lambda-x86-64", "x86-64-litert"} <= set(
        RUNNABLE
    )


def test_mlp_packages_for_every_profile_score_like_fp32(
    mlp_outcomes: dict[str, Any], digits_mlp: Any, keys: Any
) -> None:
    assert set(mlp_outcomes) == set(PROFILES)
    fp32 = _fp32_scores(digits_mlp)
    for profile_id, outcome in mlp_outcomes.items():
        profile = PROFILES[profile_id]
        assert outcome.path.exists()
        # score the held-out set through the device runtime, independently of the compiler
        model = open_model(outcome.path, keys.public.read_bytes())
        scores = model.predict({"input": digits_mlp.x_validation})["output"]
        agreement = _agreement(scores, fp32)
        assert agreement >= 1.0 - profile.budgets.max_top1_loss, (profile_id, agreement)
        accuracy = float((scores.argmax(axis=1) == digits_mlp.y_validation).mean())
        assert accuracy >= digits_mlp.fp32_accuracy - profile.budgets.max_metric_drop
        # the compiler's own report says the same
        manifest = outcome.manifest
        # and the device's manifest reader (open_model's) read what the record wrote
        assert to_builtins(model.manifest) == manifest.model_dump(mode="json")
        assert manifest.fidelity.passed
        assert manifest.fidelity.top1_agreement == pytest.approx(agreement, abs=1e-9)
        assert manifest.fidelity.metric.name == "accuracy"
        assert manifest.fidelity.metric.fp32 == pytest.approx(digits_mlp.fp32_accuracy, abs=1e-9)
        assert manifest.format in {c.format for c in profile.compile.candidates}


def test_benchmarked_only_where_this_host_can_run_the_target(mlp_outcomes: dict[str, Any]) -> None:
    for profile_id, outcome in mlp_outcomes.items():
        summary = outcome.summary()
        if profile_id in RUNNABLE:
            assert summary["latency_ms"] is not None and summary["latency_ms"] > 0
            measured = [r for r in outcome.rows if "latency_ms" in r]
            assert len(measured) >= 2, outcome.rows
            chosen = next(r for r in outcome.rows if r["status"] == "chosen")
            assert chosen["latency_ms"] <= 1.035 * min(r["latency_ms"] for r in measured)
        else:
            assert summary["latency_ms"] is None
            assert "not benchmarked here" in outcome.decision
            # not measurable: the first candidate in preference order that fits the budget
            first = PROFILES[profile_id].compile.candidates[0].key
            assert f"{summary['format']}/{summary['recipe']}" == first


def test_coral_package_is_full_int8(mlp_outcomes: dict[str, Any]) -> None:
    manifest = mlp_outcomes["coral-edgetpu-int8"].manifest
    assert (manifest.format, manifest.recipe) == ("tflite", "static_int8")
    for spec in (*manifest.signature.inputs, *manifest.signature.outputs):
        assert spec.model_dtype == "int8" and spec.quantization is not None
        assert spec.dtype == "float32"  # callers still pass floats; the runtime quantizes


def test_manifest_carries_reference_stats_test_vectors_and_lineage(
    mlp_outcomes: dict[str, Any], digits_mlp: Any
) -> None:
    manifest = mlp_outcomes["x86-64-generic"].manifest
    (inputs,) = manifest.reference.inputs
    assert inputs.feature_axis == "element" and len(inputs.features) == 64
    assert manifest.reference.rows == 256
    (outputs,) = manifest.reference.outputs
    assert outputs.features[0].name == "predicted_class"
    assert len(outputs.features[0].frequencies) == 10
    vectors = manifest.test_vectors
    assert len(vectors.inputs["input"]) == 8 and len(vectors.outputs["output"]) == 8
    assert np.allclose(vectors.inputs["input"], digits_mlp.x_validation[:8])
    lineage = manifest.lineage
    assert lineage.source_format == "torch-state-dict"
    assert lineage.source_sha256 == hashlib.sha256(digits_mlp.state_dict.read_bytes()).hexdigest()
    assert {d.role for d in lineage.datasets} == {"calibration", "validation", "labels"}
    assert lineage.tool_versions["torch"].startswith("2.13.0")
    assert manifest.release == 1


def test_cnn_from_torch_export_meets_budgets(
    digits_cnn: Any, compile_digits: Any, tmp_path: Path, keys: Any
) -> None:
    import torch

    program = torch.export.export(
        digits_cnn.module,
        (torch.from_numpy(digits_cnn.x_validation[:4]),),
        dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},),
    )
    pt2 = tmp_path / "cnn.pt2"
    torch.export.save(program, str(pt2))
    outcomes = compile_digits(digits_cnn, RUNNABLE, model=pt2, factory=None)
    fp32 = _fp32_scores(digits_cnn)
    assert {o.profile for o in outcomes} == set(RUNNABLE)
    for outcome in outcomes:
        assert outcome.manifest.lineage.source_format == "torch-export"
        model = open_model(outcome.path, keys.public.read_bytes(), host=HOST)
        scores = model.predict({"input": digits_cnn.x_validation})["output"]
        assert _agreement(scores, fp32) >= 0.98
        # every measured candidate, quantized ones included, was compared on held-out data
        for row in outcome.rows:
            if row["status"] == "skipped":  # mixed precision, when int8 already fits
                assert row["candidate"].endswith("/mixed_int8") and "not needed" in row["reason"]
                continue
            assert row["fidelity"]["rows"] == len(digits_cnn.x_validation)


def test_onnx_source_compiles_to_onnx_and_tflite(
    digits_mlp: Any, compile_digits: Any, tmp_path: Path, keys: Any
) -> None:
    import torch

    onnx_path = tmp_path / "mlp.onnx"
    torch.onnx.export(
        digits_mlp.module,
        (torch.zeros(2, 64),),
        str(onnx_path),
        input_names=["input"],
        output_names=["output"],
        dynamo=True,
        dynamic_shapes=({0: torch.export.Dim("batch")},),
    )
    outcomes = compile_digits(
        digits_mlp, ["x86-64-generic", "x86-64-litert"], model=onnx_path, factory=None
    )
    fp32 = _fp32_scores(digits_mlp)
    formats = set()
    for outcome in outcomes:
        formats.add(outcome.manifest.format)
        assert outcome.manifest.lineage.source_format == "onnx"
        scores = open_model(outcome.path, keys.public.read_bytes()).predict(
            {"input": digits_mlp.x_validation}
        )["output"]
        assert _agreement(scores, fp32) >= 0.98
    assert formats == {"onnx", "tflite"}


def test_same_inputs_give_same_model_bytes_and_manifest(
    digits_mlp: Any, compile_digits: Any
) -> None:
    profiles = ["raspberry-pi-4", "aws-lambda-arm64", "jetson-orin"]
    first = {o.profile: o for o in compile_digits(digits_mlp, profiles)}
    second = {o.profile: o for o in compile_digits(digits_mlp, profiles)}
    for profile in profiles:
        a, b = first[profile].manifest, second[profile].manifest
        assert a.model_file.sha256 == b.model_file.sha256
        dump_a, dump_b = a.model_dump(mode="json"), b.model_dump(mode="json")
        for dump in (dump_a, dump_b):
            dump["lineage"].pop("created_at")
        assert dump_a == dump_b
        assert first[profile].path.read_bytes() != b""


# ---------------------------------------------------------------- inspect / verify


def _cli(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_inspect_round_trips_the_manifest(mlp_outcomes: dict[str, Any]) -> None:
    outcome = mlp_outcomes["x86-64-litert"]
    result = _cli("inspect", str(outcome.path))
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == outcome.manifest.model_dump(mode="json")


def _rezip(package: Path, target: Path, replace: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(package) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    entries.update(replace)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    target.write_bytes(buffer.getvalue())
    return target


def test_verify_names_what_failed(mlp_outcomes: dict[str, Any], keys: Any, tmp_path: Path) -> None:
    package = mlp_outcomes["x86-64-generic"].path
    ok = _cli("verify", str(package), "--public-key", str(keys.public))
    assert ok.exit_code == 0 and "ok: digits-mlp-1-x86-64-generic-r1" in ok.output

    manifest, _, model = read_package(package.read_bytes())
    flipped_model = bytearray(model)
    flipped_model[len(model) // 2] ^= 0x01
    bad_model = _rezip(package, tmp_path / "model.fcpkg", {"model.onnx": bytes(flipped_model)})
    result = _cli("verify", str(bad_model), "--public-key", str(keys.public))
    assert result.exit_code != 0 and "hash check failed: model sha256" in result.output

    tampered = manifest.model_copy(update={"release": 99}).canonical_bytes()
    bad_manifest = _rezip(package, tmp_path / "manifest.fcpkg", {"manifest.json": tampered})
    result = _cli("verify", str(bad_manifest), "--public-key", str(keys.public))
    assert result.exit_code != 0 and "signature check failed" in result.output

    raw = bytearray(package.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # a flipped byte in the file itself: the zip CRC catches it
    flipped = tmp_path / "flipped.fcpkg"
    flipped.write_bytes(bytes(raw))
    result = _cli("verify", str(flipped), "--public-key", str(keys.public))
    assert result.exit_code != 0
    assert "check failed" in result.output and "Traceback" not in result.output

    result = _cli("verify", str(package), "--public-key", str(keys.public), "--sha256", "0" * 64)
    assert result.exit_code != 0 and "hash check failed: package sha256" in result.output

    other_key = tmp_path / "other"
    assert _cli("keys", "generate", "--dir", str(other_key)).exit_code == 0
    result = _cli("verify", str(package), "--public-key", str(other_key / "fleetcast.pub"))
    assert result.exit_code != 0 and "signature check failed" in result.output


def test_release_and_profile_checks(mlp_outcomes: dict[str, Any], keys: Any) -> None:
    public = load_public_key(keys.public)
    outcome = mlp_outcomes["x86-64-generic"]
    manifest, _, model = read_package(outcome.path.read_bytes())
    with pytest.raises(PackageError, match="release 1 is older than installed release 2") as info:
        open_package(outcome.path, public, installed_release=2)
    assert info.value.check == "release"
    resigned = build_package(
        manifest.model_copy(update={"release": 3}), model, load_private_key(keys.private)
    )
    assert open_package(resigned, public, installed_release=2).manifest.release == 3
    with pytest.raises(PackageError, match="profile check failed.*raspberry-pi-4.*arch"):
        open_package(mlp_outcomes["raspberry-pi-4"].path, public, host=HOST)
