"""Which package each device gets: all targets covered, or a refusal naming the profile."""

from __future__ import annotations

import pytest

from control_plane.core.deployment import Target, plan_deployment
from control_plane.errors import Conflict, InvalidInput

PACKAGES = {"x86-64-generic": "a" * 64, "raspberry-pi-4": "b" * 64}


def test_each_device_gets_the_package_of_its_profile() -> None:
    targets = [Target("cam-1", "x86-64-generic"), Target("pi-1", "raspberry-pi-4")]
    assert plan_deployment("digits", "1", "staged", targets, PACKAGES) == {
        "cam-1": "a" * 64,
        "pi-1": "b" * 64,
    }


def test_a_missing_profile_refuses_the_whole_deployment_naming_it() -> None:
    targets = [Target("cam-1", "x86-64-generic"), Target("orin-1", "jetson-orin")]
    with pytest.raises(
        Conflict, match=r"no package for profile\(s\) jetson-orin \(devices orin-1\)"
    ):
        plan_deployment("digits", "1", "production", targets, PACKAGES)


def test_a_device_without_a_profile_is_named() -> None:
    with pytest.raises(Conflict, match="cam-9 have not reported a hardware profile"):
        plan_deployment("digits", "1", "compiled", [Target("cam-9", None)], PACKAGES)


@pytest.mark.parametrize("stage", ["registered", "retired"])
def test_only_deployable_stages_deploy(stage: str) -> None:
    with pytest.raises(Conflict, match=f"is {stage}"):
        plan_deployment("digits", "1", stage, [Target("cam-1", "x86-64-generic")], PACKAGES)


def test_nothing_to_deploy_to() -> None:
    with pytest.raises(InvalidInput, match="no active device matches"):
        plan_deployment("digits", "1", "staged", [], PACKAGES)
