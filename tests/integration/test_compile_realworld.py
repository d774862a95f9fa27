"""The compiler on real-world-shaped models trained here: a transformer encoder (token
ids + mask in, normalised embedding out), an embedding-bag text classifier (int64
ids), a regression MLP on scikit-learn's diabetes data, a fixed-batch .pt2 and an
ONNX transformer going to TFLite. Every chosen package is scored independently of
the compiler, through the device runtime, against the fp32 torch model with the
task's own measure."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from benchmarks import realworld_models as rw
from control_plane.cli import cli
from control_plane.compiler.pipeline import CompileRequest, compile_model
from control_plane.core.fidelity import cosines, nn_agreement
from control_plane.core.hardware import load_profiles, select_profiles
from edge_agent.errors import InvalidInput
from edge_agent.runtime import open_model

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PROFILES_DIR = ROOT / "hardware-profiles"
PROFILES = load_profiles(PROFILES_DIR)
TARGETS = ["x86-64-avx512-vnni", "x86-64-litert"]  # one ONNX, one LiteRT profile


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("realworld")


@pytest.fixture(scope="module")
def encoder(workdir: Path) -> rw.Trained:
    return rw.train_encoder(workdir)


@pytest.fixture(scope="module")
def bag(workdir: Path) -> rw.Trained:
    return rw.train_bag(workdir)


@pytest.fixture(scope="module")
def regressor(workdir: Path) -> rw.Trained:
    return rw.train_regressor(workdir)


@pytest.fixture(scope="module")
def compile_trained(keys: Any, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Any]:
    def run(
        trained: rw.Trained,
        factory: str | None,
        profiles: list[str],
        profiles_dir: Path = PROFILES_DIR,
        progress: Callable[[str], None] | None = None,
        **overrides: Any,
    ) -> list[Any]:
        request = CompileRequest(
            model=overrides.pop("model", trained.files["model"]),
            factory=factory,
            calibration=trained.files["calibration"],
            validation=trained.files["validation"],
            labels=trained.files.get("labels"),
            profiles=select_profiles(profiles_dir, profiles),
            out_dir=tmp_path_factory.mktemp("packages"),
            signing_key=keys.private,
            model_name="rw",
            model_version="1",
            **overrides,
        )
        return list(compile_model(request, progress))

    return run


def _fp32(trained: rw.Trained) -> np.ndarray:
    import torch

    with torch.no_grad():
        args = [torch.from_numpy(v) for v in trained.validation.values()]
        return np.asarray(trained.module(*args).numpy())


def _score(outcome: Any, trained: rw.Trained, keys: Any) -> np.ndarray:
    """The package opened as a device opens it, scored as the compiler validates: in calls
    of ``SCORE_ROWS`` rows. Dynamic int8 quantizes activations per call, so its outputs
    depend on how many rows a call carries; the manifest's fidelity is at that call size
    (docs/compiler.md)."""
    from control_plane.compiler.pipeline import score_rows

    model = open_model(outcome.path, keys.public.read_bytes())
    (output,) = score_rows(model, trained.validation).values()
    return output


# ---------------------------------------------------------------- transformer embeddings


@pytest.fixture(scope="module")
def encoder_outcomes(encoder: rw.Trained, compile_trained: Callable[..., Any]) -> list[Any]:
    return compile_trained(
        encoder,
        "benchmarks.realworld_models:build_encoder",
        TARGETS,
        unknown_id=rw.UNKNOWN_ID,
    )


def test_transformer_embeddings_compile_for_onnx_and_litert(
    encoder_outcomes: list[Any], encoder: rw.Trained, keys: Any
) -> None:
    fp32 = _fp32(encoder)
    assert {o.profile for o in encoder_outcomes} == set(TARGETS)
    for outcome in encoder_outcomes:
        manifest = outcome.manifest
        assert manifest.task == "embedding"  # inferred: unit-length output rows
        budget = PROFILES[outcome.profile].budgets.embedding
        got = _score(outcome, encoder, keys)
        cos = cosines(fp32, got)
        assert cos.mean() >= budget.min_mean_cosine, (outcome.profile, cos.mean())
        assert np.percentile(cos, 1) >= budget.min_p1_cosine
        assert nn_agreement(fp32, got) >= budget.min_nn_agreement
        fid = manifest.fidelity
        assert fid.measure is not None and "cosine" in fid.measure
        assert fid.mean_cosine == pytest.approx(float(cos.mean()), abs=1e-4)
        assert fid.top1_agreement is None
        ids, mask = manifest.signature.inputs
        assert ids.dtype == "int64" and mask.dtype == "int64"
        # the device's self-test reproduces the package's integer test vectors
        from edge_agent.install import self_test

        model = open_model(outcome.path, keys.public.read_bytes())
        assert self_test(model.loaded, manifest) == []
        assert np.asarray(manifest.test_vectors.inputs["ids"]).dtype.kind == "i"
        # static activation quantization is ruled out for attention, with the reason
        skipped = [r for r in outcome.rows if r["status"] == "skipped"]
        assert any("static" in r["candidate"] and "attention" in r["reason"] for r in skipped)
        # the int8 weights made it smaller than fp32
        assert manifest.recipe != "fp32" or "within" in outcome.decision


def test_token_inputs_get_statistics_drift_can_watch(
    encoder_outcomes: list[Any], encoder: rw.Trained, keys: Any
) -> None:
    manifest = encoder_outcomes[0].manifest
    ids, mask = manifest.reference.inputs
    assert ids.feature_axis == "tokens" and ids.unknown_id == rw.UNKNOWN_ID
    assert [f.name for f in ids.features] == ["length", "padding_share", "unknown_share"]
    length = ids.features[0]
    lengths = (encoder.validation["ids"] != 0).sum(axis=1)
    assert rw.SEQ // 3 - 1 <= (length.min or 0) and (length.max or 0) <= rw.SEQ
    assert abs((length.mean or 0) - lengths.mean()) < 2.0  # calibration vs validation rows
    unknown = ids.features[2]
    assert 0.0 < (unknown.mean or 0) < 0.05  # ~3 % of the real tokens are unknown
    assert mask.feature_axis == "mask" and mask.features[0].name == "length"
    # the device counts live traffic on those bins, and refuses floats for ids
    model = open_model(encoder_outcomes[0].path, keys.public.read_bytes())
    model.predict(encoder.validation)
    window = model.telemetry.close_window(device_id="d", sequence=1)
    assert window["rows"] == len(encoder.labels)
    text = json.dumps(window)
    assert "padding_share" in text and "unknown_share" in text
    with pytest.raises(InvalidInput, match="expected int64"):
        model.predict({k: v.astype(np.float32) for k, v in encoder.validation.items()})
    with pytest.raises(InvalidInput, match="do not fit int64|not numeric"):
        model.predict({"ids": np.full((1, rw.SEQ), 2**70), "mask": encoder.validation["mask"][:1]})


@pytest.mark.parametrize(
    ("base", "fmt", "plain", "min_cosine"),
    [
        ("x86-64-avx512-vnni", "onnx", "dynamic_int8_per_channel", 0.99999),
        ("x86-64-litert", "tflite", "dynamic_int8", 0.999995),
    ],
)
def test_mixed_precision_lifts_int8_over_a_tight_budget(
    encoder: rw.Trained,
    compile_trained: Callable[..., Any],
    keys: Any,
    tmp_path: Path,
    base: str,
    fmt: str,
    plain: str,
    min_cosine: float,
) -> None:
    """A budget plain per-channel int8 misses: the tuned candidate keeps a few ops in float
    (onnxruntime's nodes_to_exclude; ai-edge-quantizer's per-op no_quantize recipes)."""
    text = (PROFILES_DIR / f"{base}.toml").read_text()
    text = text.replace(f'id = "{base}"', 'id = "tight"')
    text = text.replace("min_mean_cosine = 0.99\n", f"min_mean_cosine = {min_cosine}\n")
    (tmp_path / "tight.toml").write_text(text)
    (outcome,) = compile_trained(
        encoder, "benchmarks.realworld_models:build_encoder", ["tight"], profiles_dir=tmp_path
    )
    rows = {r["candidate"]: r for r in outcome.rows}
    missed = rows[f"{fmt}/{plain}"]
    assert missed["status"] == "rejected" and "mean cosine" in missed["reason"]
    tuned = rows[f"{fmt}/mixed_int8"]
    assert tuned["status"] in ("chosen", "within budget"), tuned
    assert any(t.endswith("within budget") for t in tuned["trials"]), tuned["trials"]
    nodes = tuned["fidelity"]["float_nodes"]
    assert 1 <= len(nodes) <= PROFILES[base].compile.max_float_nodes
    for node in nodes:
        assert node["name"] and node["sensitivity"] > 0 and node["added_bytes"] > 0
        assert node["op"] in ("MatMul", "Gemm", "Gather", "FULLY_CONNECTED", "EMBEDDING_LOOKUP")
    assert tuned["size_bytes"] < rows[f"{fmt}/fp32"]["size_bytes"]
    if outcome.manifest.recipe == "mixed_int8":  # chosen: score it independently
        cos = cosines(_fp32(encoder), _score(outcome, encoder, keys))
        assert cos.mean() >= min_cosine
        assert [n.name for n in outcome.manifest.fidelity.float_nodes] == [n["name"] for n in nodes]


def test_onnx_transformer_with_mask_arithmetic_converts_to_tflite(
    encoder: rw.Trained, compile_trained: Callable[..., Any], keys: Any, workdir: Path
) -> None:
    """opset 18 from torch's exporter: GreaterOrEqual, Split-18, allowzero Reshapes."""
    import onnx
    import torch

    from control_plane.compiler.sources import export_onnx

    sample = tuple(torch.from_numpy(v[:2]) for v in encoder.validation.values())
    path = workdir / "encoder.onnx"
    path.write_bytes(export_onnx(encoder.module, sample, ["ids", "mask"], 18, path))
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "GreaterOrEqual" in ops
    (outcome,) = compile_trained(encoder, None, ["x86-64-litert"], model=path)
    assert outcome.manifest.format == "tflite"
    got = _score(outcome, encoder, keys)
    assert cosines(_fp32(encoder), got).mean() >= 0.99


# ---------------------------------------------------------------- embedding-bag classifier


def test_embedding_bag_classifier_with_int64_ids(
    bag: rw.Trained, compile_trained: Callable[..., Any], keys: Any
) -> None:
    outcomes = compile_trained(bag, "benchmarks.realworld_models:build_bag", TARGETS)
    fp32 = _fp32(bag)
    fp32_accuracy = float((fp32.argmax(1) == bag.labels).mean())
    assert fp32_accuracy > 0.8  # the model learned the topics
    for outcome in outcomes:
        budgets = PROFILES[outcome.profile].budgets
        got = _score(outcome, bag, keys)
        agreement = float((got.argmax(1) == fp32.argmax(1)).mean())
        assert agreement >= 1 - budgets.max_top1_loss
        accuracy = float((got.argmax(1) == bag.labels).mean())
        assert accuracy >= fp32_accuracy - budgets.max_metric_drop
        fid = outcome.manifest.fidelity
        assert outcome.manifest.task == "classification" and fid.measure == "top-1 agreement"
        assert fid.metric is not None and fid.metric.name == "accuracy"
        (ids,) = outcome.manifest.reference.inputs
        assert ids.feature_axis == "tokens" and ids.unknown_id is None


# ---------------------------------------------------------------- regression, fixed batch


def test_regression_on_diabetes_is_judged_on_relative_error(
    regressor: rw.Trained, compile_trained: Callable[..., Any], keys: Any
) -> None:
    outcomes = compile_trained(regressor, "benchmarks.realworld_models:build_regressor", TARGETS)
    fp32 = _fp32(regressor)
    for outcome in outcomes:
        budget = PROFILES[outcome.profile].budgets.regression
        got = _score(outcome, regressor, keys)
        relative = float(np.abs(got - fp32).mean() / fp32.std())
        assert relative <= budget.max_relative_error
        fid = outcome.manifest.fidelity
        assert outcome.manifest.task == "regression"  # inferred from real-valued labels
        assert fid.relative_error == pytest.approx(relative, abs=1e-5)
        assert fid.metric is not None and fid.metric.name == "mae"
        mae = float(np.abs(got[:, 0] - regressor.labels).mean())
        assert mae == pytest.approx(fid.metric.candidate, rel=1e-4)


def test_static_batch_pt2_is_re_exported_with_a_dynamic_batch(
    regressor: rw.Trained, compile_trained: Callable[..., Any], keys: Any, tmp_path: Path
) -> None:
    """A row-wise model saved at torch.export's default static batch of 1: its guards pin
    the batch, the compiler re-exports it with a dynamic one (checked row for row)."""
    import torch

    x = regressor.validation["input"]
    program = torch.export.export(regressor.module, (torch.from_numpy(x[:1]),))  # batch 1
    pt2 = tmp_path / "static.pt2"
    torch.export.save(program, str(pt2))
    with pytest.raises(Exception, match="Guard failed|Expected input"):
        program.module()(torch.from_numpy(x[:3]))
    steps: list[str] = []
    outcomes = compile_trained(regressor, None, TARGETS, model=pt2, progress=steps.append)
    assert any("re-exported with a dynamic batch" in s for s in steps), steps
    fp32 = _fp32(regressor)
    for outcome in outcomes:
        assert outcome.manifest.signature.batch is None
        assert outcome.manifest.lineage.source_format == "torch-export"
        got = _score(outcome, regressor, keys)
        relative = float(np.abs(got - fp32).mean() / fp32.std())
        assert relative <= PROFILES[outcome.profile].budgets.regression.max_relative_error


def test_fixed_batch_pt2_compiles_and_the_runtime_splits_requests(
    regressor: rw.Trained, compile_trained: Callable[..., Any], keys: Any, tmp_path: Path
) -> None:
    """A graph that bakes its traced batch into a Reshape cannot be re-exported: it stays a
    batch-1 model, and the runtime splits requests."""
    import torch

    x = regressor.validation["input"]
    module = rw.BatchBaked(regressor.module).eval()
    program = torch.export.export(module, (torch.from_numpy(x[:1]),))
    pt2 = tmp_path / "fixed.pt2"
    torch.export.save(program, str(pt2))
    steps: list[str] = []
    outcomes = compile_trained(regressor, None, TARGETS, model=pt2, progress=steps.append)
    assert any("cannot re-export with a dynamic batch" in s for s in steps), steps
    fp32 = _fp32(regressor)
    for outcome in outcomes:
        assert outcome.manifest.signature.batch == 1
        got = _score(outcome, regressor, keys)  # 133 rows through a batch-1 model
        assert got.shape == fp32.shape
        relative = float(np.abs(got - fp32).mean() / fp32.std())
        assert relative <= PROFILES[outcome.profile].budgets.regression.max_relative_error


def test_cli_prints_the_inferred_task_and_its_measure(
    regressor: rw.Trained, keys: Any, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = [
        "compile",
        str(regressor.files["model"]),
        "--factory",
        "benchmarks.realworld_models:build_regressor",
        "--calibration",
        str(regressor.files["calibration"]),
        "--validation",
        str(regressor.files["validation"]),
        "-p",
        "x86-64-generic",
        "--out",
        str(out),
        "--key",
        str(keys.private),
        "--name",
        "diabetes",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "task: regression, inferred: one output value per row" in result.output
    assert "relative error" in result.output
    forced = CliRunner().invoke(cli, [*args, "--task", "regression", "--json"])
    assert forced.exit_code == 0, forced.output
    summary = json.loads(forced.stdout.strip().splitlines()[-1])
    assert summary["fidelity"]["task"] == "regression"
    shutil.rmtree(out)
