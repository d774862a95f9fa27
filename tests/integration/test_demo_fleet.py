"""The fleet half of `fleetcast demo` (steps 5-11) on the session's compiled digits MLP:
a control plane, a gRPC and an MQTT agent, the deploy, telemetry, drift, delayed labels and
accuracy per site, then version 2 in
a staged rollout of 2 waves over the REST API and the lineage of its package. The training
and compile half is left out (it takes minutes; `make demo` runs all of it)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from control_plane.demo_fleet import run_fleet_demo
from control_plane.signing import PRIVATE_NAME, PUBLIC_NAME

pytestmark = pytest.mark.integration


def test_the_fleet_demo_rolls_out_version_2_in_two_waves_and_traces_it(
    tmp_path: Path, keys: Any, package: Path
) -> None:
    from control_plane.examples import digits

    key_dir = tmp_path / "keys"
    key_dir.mkdir()
    shutil.copy(keys.private, key_dir / PRIVATE_NAME)
    shutil.copy(keys.public, key_dir / PUBLIC_NAME)
    packages = tmp_path / "packages"
    packages.mkdir()
    fleet_package = Path(shutil.copy(package, packages / package.name))
    split = digits.load_split()
    console = Console(record=True, width=200)

    found = run_fleet_demo(
        console, tmp_path, key_dir, fleet_package, split.x_validation, split.y_validation
    )

    view = found["rollout"]
    assert view["summary"]["phase"] == "completed"
    assert view["summary"]["version"] == "2"
    assert [w["status"] for w in view["summary"]["waves"]] == ["passed", "passed"]
    # 1 device, then the rest; every device installed version 2
    waves = sorted(d["wave"] for d in view["devices"].values())
    assert waves == [0, 1]
    assert {d["status"] for d in view["devices"].values()} == {"succeeded"}
    for wave in view["summary"]["waves"]:
        assert wave["gates"]["install"] == "pass"
    assert found["package_id"] == "digits-mlp-2-x86-64-generic-r1"
    assert found["running"] == ["demo-grpc", "demo-mqtt"]
    text = console.export_text()
    assert "staged rollout" in text and "1 (1 device)" in text and "2 (100%)" in text
    assert "report running digits-mlp version 2" in text
    assert "runs on demo-grpc, demo-mqtt" in text
    assert "joined 300 of 300 labels" in text  # 150 per site, each prediction captured
    cells = {
        row[0]: row
        for row in ([c.strip() for c in line.split("│") if c.strip()] for line in text.splitlines())
        if row and row[0] in ("site=lab", "site=field")
    }
    lab, field = cells["site=lab"], cells["site=field"]
    assert lab[2] == field[2] == "150"  # labelled
    assert float(lab[3]) > 0.9 and float(field[3]) < float(lab[3]) - 0.2  # measured
