"""First run: every ``fleetcast-agent`` subcommand on an empty setup answers one clear line.

Each runs as a real subprocess on an empty or missing state directory (or
without the public key) and must exit non-zero with a message naming what to
run, never a Python traceback.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def agent_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent", *args],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(cwd)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_every_subcommand_on_an_empty_setup_says_what_to_run(tmp_path: Path, keys: object) -> None:
    empty = tmp_path / "missing-state"
    public = keys.public
    cases = {
        "run, no public key": (
            ["run", "--state-dir", str(empty), "--device-id", "d1"],
            "FLEETCAST_AGENT_PUBLIC_KEY is not set (or pass --public-key)",
        ),
        "run, public key missing": (
            ["run", "--state-dir", str(empty), "--device-id", "d1", "--public-key", "nope.pub"],
            "public key nope.pub not found: copy the control plane's fleetcast.pub",
        ),
        "run, not a key": (
            ["run", "--state-dir", str(empty), "--device-id", "d1", "--public-key", __file__],
            "not a PEM public key",
        ),
        "run, never enrolled": (
            [
                "run",
                "--state-dir",
                str(empty),
                "--device-id",
                "d1",
                "--public-key",
                str(public),
                "--server",
                "grpc://127.0.0.1:1",
            ],
            "enroll first (`fleetcast-agent enroll`)",
        ),
        "install, no agent running": (
            ["install", __file__, "--address", f"unix:{empty}/agent.sock", "--timeout", "5"],
            "start one with `fleetcast-agent run",
        ),
        "enroll, no control plane": (
            [
                "enroll",
                "--server",
                "127.0.0.1:1",
                "--token",
                "enr_x",
                "--device-id",
                "d1",
                "--state-dir",
                str(empty),
            ],
            "is `fleetcast serve` running at 127.0.0.1:1?",
        ),
    }
    for name, (args, message) in cases.items():
        result = agent_cli(*args, cwd=tmp_path)
        output = result.stdout + result.stderr
        assert result.returncode != 0, (name, output)
        assert "Traceback" not in output, (name, output)
        assert message in output, (name, output)
    assert not (empty / "credentials.json").exists()
