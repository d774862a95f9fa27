"""Issue #7, first run: every `fleetcast` command on an empty data directory answers in
one clear line (or creates what it needs and says so), never with a traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

# (arguments, what the answer must say); "{tmp}" is the test's empty working directory.
# `fleetcast demo` is left out: it creates everything it needs by design and takes
# minutes (it trains and compiles); `make demo` runs it on an empty directory.
COMMANDS = [
    (["keys", "generate"], "private key:"),
    (["profiles", "list"], "x86-64-generic"),  # built-in profiles ship in the package
    (["profiles", "list", "--profiles-dir", "{tmp}/none"], "does not exist"),
    (["compile", "m.onnx", "--calibration", "c.npz", "--validation", "v.npz", "--name", "m"],
     "run `fleetcast keys generate`"),
    (["inspect", "missing.fcpkg"], "does not exist"),
    (["inspect", "{tmp}/junk.fcpkg"], "not a .fcpkg"),
    (["verify", "{tmp}/junk.fcpkg", "--public-key", "{tmp}/junk.fcpkg"], "not a PEM public key"),
    # the fleet commands are API clients: no server answers on this closed port
    (["devices", "token", "--server", "http://127.0.0.1:9"], "cannot reach http://127.0.0.1:9"),
    (["devices", "token", "--ttl", "soon"], "expected a duration"),
    (["devices", "list", "--server", "http://127.0.0.1:9"], "cannot reach"),
    (["devices", "revoke", "dev-x", "--server", "http://127.0.0.1:9"], "cannot reach"),
    (["deploy", "digits", "1"], "give exactly one of --device or --selector"),
    (["keys", "rotate", "--server", "http://127.0.0.1:9"], "cannot reach"),
    (["admin", "rotate-sample-key"], "sample key "),
    (["store", "import-old", "missing.db"], "does not exist"),
    (["store", "import-old", "{tmp}/junk.fcpkg"], "not a fleetcast store"),
    (["certs", "device", "dev-x"], "run `fleetcast certs init"),
    (["certs", "server", "--host", "cp.test"], "run `fleetcast certs init"),
    (["certs", "init", "--host", "cp.test"], "CA:"),
    (["serve", "--grpc", "0.0.0.0:0"], "refusing to serve gRPC on 0.0.0.0:0 without TLS"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "says"), COMMANDS, ids=[" ".join(c[0]) for c in COMMANDS])
def test_each_command_on_an_empty_data_dir(tmp_path: Path, args: list[str], says: str) -> None:
    (tmp_path / "junk.fcpkg").write_text("not a package")
    env = {**os.environ, "FLEETCAST_DATA_DIR": str(tmp_path / "data"), "PATH": os.environ["PATH"]}
    env.pop("FLEETCAST_PROFILES_DIR", None)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = subprocess.run(
        [sys.executable, "-m", "control_plane", *argv],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert says in output, output
    if result.returncode != 0:  # a refusal is one line (click's usage errors add a hint line)
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1, result.stderr


def test_serve_on_an_empty_data_dir_starts_and_says_what_is_missing(tmp_path: Path) -> None:
    env = {**os.environ, "FLEETCAST_DATA_DIR": str(tmp_path / "data")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "control_plane",
            "serve",
            "--grpc",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
        ],
        env=env,
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    lines = []
    try:
        while line := proc.stderr.readline():
            lines.append(line)
            if line.startswith("serving gRPC"):
                break
    finally:
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=60)[1]  # catches a hang only; a stop takes ~3 s
    output = "".join(lines) + rest
    assert "Traceback" not in output, output
    assert "no package signing key" in output and "fleetcast keys generate" in output
    assert any(line.startswith("serving gRPC") for line in lines), output
    assert proc.returncode == 0
