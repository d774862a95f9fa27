"""Every dependency of the device extras has a wheel for the targets in hardware-profiles/.

This is `pip download --only-binary=:all: --platform ... --python-version ...`
(pip's resolver reading the wheels' metadata, no download) against PyPI, so it
needs the network to the package index, which CI has. aarch64 is a Raspberry Pi
4/5 or a Jetson; see tools/wheels.py for the glibc floor of the platform tags.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.wheels import ARCHES, DEVICE_EXTRAS, PYTHONS, build_wheel, platforms, resolve

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("dist"))


# `agent` is the union of `agent-onnx` and `agent-litert`, so it resolving on a target
# means every dependency of every device extra has a wheel there; the narrow extras
# are resolved on the Raspberry Pi / Jetson target to check what they leave out.
TARGETS = [("agent", arch, python) for arch in ARCHES for python in PYTHONS] + [
    (extra, "aarch64", "3.11") for extra in DEVICE_EXTRAS if extra != "agent"
]


@pytest.mark.parametrize(
    ("extra", "arch", "python"), TARGETS, ids=[f"{e}-{a}-py{p}" for e, a, p in TARGETS]
)
def test_device_extra_resolves_to_wheels(wheel: Path, extra: str, arch: str, python: str) -> None:
    result = resolve(wheel, extra, arch, python)
    assert result.ok, f"fleetcast[{extra}] on {arch} Python {python}: {result.error}"
    names = " ".join(result.wheels)
    assert ("onnxruntime-" in names) == (extra in ("agent", "agent-onnx"))
    assert ("ai_edge_litert-" in names) == (extra in ("agent", "agent-litert"))
    for heavy in ("torch-", "flask-", "onnx-", "litert_torch-", "ai_edge_quantizer-"):
        assert heavy not in names.lower(), f"{heavy} in fleetcast[{extra}]"
    native = [w for w in result.wheels if not w.endswith("-none-any.whl")]
    assert native and all(arch in w for w in native), native


def test_platform_tags_cover_the_glibc_of_the_devices() -> None:
    tags = platforms("aarch64")
    assert tags[0] == "manylinux_2_35_aarch64"  # JetPack 6; Raspberry Pi OS 12 has 2.36
    assert "manylinux_2_28_aarch64" in tags and tags[-1] == "manylinux2014_aarch64"
