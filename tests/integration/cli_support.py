"""The operator's `fleetcast` CLI against a served API: a token, then a package file deployed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from edge_agent.package import read_package


def fleetcast(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "control_plane", *args],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def ok(env: dict[str, str], *args: str) -> str:
    done = fleetcast(env, *args)
    assert done.returncode == 0, (args, done.stderr)
    return done.stdout


def operator_env(serve_env: dict[str, str], http_port: int, config: Path) -> dict[str, str]:
    """``serve_env`` plus the API's URL and a first admin token (`fleetcast admin init`)."""
    token = json.loads(ok(serve_env, "admin", "init", "--json"))["token"]
    return {
        **serve_env,
        "FLEETCAST_SERVER": f"http://127.0.0.1:{http_port}",
        "FLEETCAST_TOKEN": token,
        "XDG_CONFIG_HOME": str(config),
    }


def deploy_file(env: dict[str, str], package: Path, device_id: str) -> None:
    """Register the package's version, add the package, set the device's profile, deploy."""
    manifest = read_package(package.read_bytes())[0]
    model, version = manifest.model_name, manifest.model_version
    ok(env, "models", "create", model, "--owner", "ml")
    ok(env, "versions", "register", model, version, "--intended-use", "tests",
       "--training-data", "sklearn digits", "--owner", "ml")  # fmt: skip
    ok(env, "packages", "add", str(package))
    ok(env, "versions", "stage", model, version, "compiled")
    ok(env, "devices", "set", device_id, "--profile", manifest.profile.id)
    ok(env, "deploy", model, version, "--device", device_id)
