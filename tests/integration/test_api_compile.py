"""A compile job through the served API end to end: the real pipeline, packages in the catalog."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from control_plane.api import create_api
from control_plane.api.client import ApiClient
from control_plane.api.serve import serve_http
from control_plane.cli import cli
from control_plane.compiler.sources import load_npz, load_torch
from control_plane.services.tokens import bootstrap_admin
from control_plane.settings import Settings
from control_plane.store.factory import open_repositories
from edge_agent.package import load_public_key, open_package

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
PROFILES = ["x86-64-generic", "x86-64-litert"]


def onnx_of(trained: Any, out: Path) -> Path:
    """The trained digits MLP as a dynamic-batch ONNX file (the compiler's own export)."""
    calibration = load_npz(trained.calibration, "calibration")
    source = load_torch(
        trained.state_dict,
        f"control_plane.examples.digits:{trained.kind}",
        calibration,
        17,
        trained.calibration,
    )
    out.write_bytes(source.onnx_bytes)
    return out


def test_a_compile_job_through_the_api_registers_signed_packages(
    tmp_path: Path, digits_mlp: Any, keys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a relative data directory, as `fleetcast serve` has by default (.fleetcast): the
    # job's links to the uploads must still resolve from its temporary directory
    monkeypatch.chdir(tmp_path)
    settings = Settings(data_dir=Path("data"), profiles_dir=ROOT / "hardware-profiles")
    settings.key_dir.mkdir(parents=True)
    shutil.copy(keys.private, settings.key_dir / "fleetcast.key")
    repos = open_repositories(Path("data") / "store.db")
    _, admin = bootstrap_admin(repos)
    handle = serve_http(create_api(repos, settings), "127.0.0.1", 0)  # the pipeline runner
    try:
        client = ApiClient(handle.url, admin)
        client.request("POST", "/api/v1/models", body={"name": "digits", "owner": "ml"})
        env = {"FLEETCAST_SERVER": handle.url, "FLEETCAST_TOKEN": admin,
               "XDG_CONFIG_HOME": str(tmp_path / "config")}  # fmt: skip
        register = CliRunner().invoke(
            cli,
            [
                "versions", "register", "digits", "1",
                "--source", str(onnx_of(digits_mlp, tmp_path / "digits.onnx")),
                "--calibration", str(digits_mlp.calibration),
                "--validation", str(digits_mlp.validation),
                "--labels", str(digits_mlp.labels),
                "--intended-use", "handwritten digits", "--training-data", "sklearn digits",
                "--owner", "ml", "--metric", f"accuracy={digits_mlp.fp32_accuracy}", "--json",
            ],
            env=env,
            obj=settings,
        )  # fmt: skip
        assert register.exit_code == 0, register.output
        args = ["versions", "compile", "digits", "1", "--json"]
        for profile in PROFILES:
            args += ["-p", profile]
        compiled = CliRunner().invoke(cli, args, env=env, obj=settings)
        assert compiled.exit_code == 0, compiled.output
        job = json.loads(compiled.stdout.strip().splitlines()[-1])
        assert job["state"] == "succeeded", job
        shown = client.request("GET", f"/api/v1/compile-jobs/{job['id']}")
        assert "choosing for x86-64-generic" in shown["log"]
        assert [p["profile"] for p in shown["report"]["packages"]] == PROFILES

        listed = client.request("GET", "/api/v1/packages", query={"model": "digits"})["items"]
        assert sorted(p["profile_id"] for p in listed) == sorted(PROFILES)
        public = load_public_key(keys.public)
        for item in listed:
            stored = repos.packages.get(item["sha256"])
            checked = open_package(Path(stored.path), public, expected_sha256=item["sha256"])
            assert (checked.manifest.model_name, checked.manifest.model_version) == ("digits", "1")
            assert checked.manifest.profile.id == item["profile_id"]
            assert checked.manifest.fidelity.passed
        version = client.request("GET", "/api/v1/models/digits/versions/1")
        assert version["stage"] == "compiled"
        registered = client.request("GET", "/api/v1/audit", query={"action": "package.register"})[
            "items"
        ]
        assert len(registered) == len(PROFILES)
    finally:
        handle.stop()
        repos.close()
