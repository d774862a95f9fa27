from __future__ import annotations

from pathlib import Path

import pytest

from control_plane.core.hardware import load_profile, load_profiles, select_profiles
from control_plane.errors import NotFound, ProfileError
from edge_agent.core.host import HostInfo

PROFILES = Path(__file__).resolve().parents[3] / "hardware-profiles"
REQUIRED = {
    "x86-64-generic",
    "x86-64-avx512-vnni",
    "raspberry-pi-4",
    "raspberry-pi-5",
    "coral-edgetpu-int8",
    "jetson-orin",
    "aws-lambda-x86-64",
    "aws-lambda-arm64",
}
X86_VNNI_HOST = HostInfo(
    os="linux",
    arch="x86_64",
    cpu_features=frozenset({"avx2", "fma", "avx512f", "avx512_vnni"}),
    runtimes=frozenset({"onnxruntime", "litert"}),
    execution_providers=frozenset({"CPUExecutionProvider"}),
)


@pytest.mark.parametrize("path", sorted(PROFILES.glob("*.toml")), ids=lambda p: p.stem)
def test_every_profile_parses(path: Path) -> None:
    profile = load_profile(path)
    assert profile.id == path.stem
    assert profile.compile.candidates
    assert profile.budgets.max_package_bytes > 0


def test_required_targets_are_present() -> None:
    assert REQUIRED <= set(load_profiles(PROFILES))


def test_coral_is_full_int8_and_jetson_names_gpu_providers() -> None:
    profiles = load_profiles(PROFILES)
    coral = profiles["coral-edgetpu-int8"]
    assert coral.compile.io_dtype == "int8"
    assert [c.key for c in coral.compile.candidates] == ["tflite/static_int8"]
    jetson = profiles["jetson-orin"]
    assert jetson.compile.candidates[0].key == "onnx/fp16"
    assert {"TensorrtExecutionProvider", "CUDAExecutionProvider"} <= set(
        jetson.runtime.execution_providers
    )
    # Lambda's limit is 250 MB (decimal megabytes as AWS counts them) unzipped
    assert profiles["aws-lambda-x86-64"].budgets.max_package_bytes == 250 * 1_048_576


def test_host_mismatches_name_the_reasons() -> None:
    profiles = load_profiles(PROFILES)
    assert profiles["x86-64-avx512-vnni"].host_mismatches(X86_VNNI_HOST) == []
    pi = profiles["raspberry-pi-5"].host_mismatches(X86_VNNI_HOST)
    assert any("arch" in p for p in pi) and any("asimddp" in p for p in pi)
    coral = profiles["coral-edgetpu-int8"].host_mismatches(X86_VNNI_HOST)
    assert any("edgetpu" in p for p in coral)
    no_vnni = HostInfo(**{**X86_VNNI_HOST.__dict__, "cpu_features": frozenset({"avx2", "fma"})})
    assert any("avx512_vnni" in p for p in profiles["x86-64-avx512-vnni"].host_mismatches(no_vnni))


GOOD = (PROFILES / "x86-64-generic.toml").read_text()


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (GOOD.replace('arch = "x86_64"', 'arch = "sparc"'), "target.arch"),
        (GOOD.replace("threads = 1", 'threads = "two"'), "runtime.threads"),
        (GOOD.replace("max_top1_loss = 0.01", "max_top1_loss = 3"), "budgets.max_top1_loss"),
        (GOOD.replace("[benchmark]", "[benchmark]\nfrequency = 3"), "benchmark.frequency"),
        (GOOD.replace('recipe = "fp32"', 'recipe = "int3"'), "compile.candidates.5.recipe"),
        (
            GOOD.replace(
                '{ format = "onnx", recipe = "fp32" }', '{ format = "tflite", recipe = "fp32" }'
            ),
            "compile.candidates.5",
        ),
        (
            GOOD.replace("max_package_bytes = 104_857_600   # 100 MiB\n", ""),
            "budgets.max_package_bytes",
        ),
    ],
)
def test_bad_profile_names_file_and_field(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "x86-64-generic.toml"
    path.write_text(text)
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    message = str(info.value)
    assert str(path) in message
    assert field in message
    assert "\n" not in message


def test_malformed_toml_and_id_mismatch(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("id = \n")
    with pytest.raises(ProfileError, match=r"broken\.toml: not valid TOML"):
        load_profile(broken)
    renamed = tmp_path / "other-name.toml"
    renamed.write_text(GOOD)
    with pytest.raises(ProfileError, match=r"field id: 'x86-64-generic' must match the file name"):
        load_profile(renamed)


def test_unknown_profile_lists_known_ones() -> None:
    with pytest.raises(NotFound, match="unknown profile.*no-such-board.*known: .*raspberry-pi-4"):
        select_profiles(PROFILES, ["no-such-board"])
    assert [p.id for p in select_profiles(PROFILES, ["jetson-orin"])] == ["jetson-orin"]
