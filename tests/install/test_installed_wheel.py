"""Install the wheel the way a user does and run the product from that install only.

The wheel is built from a clean copy of the work tree; its dependencies for this
host come into a wheelhouse (`make wheelhouse`'s code), and a fresh virtualenv
outside the repository installs ``fleetcast[agent,server]`` from that wheelhouse
with ``--no-index``, as an offline device would. Every command below runs from
that virtualenv with the working directory elsewhere and no PYTHONPATH, so
nothing of the source tree can help: the generated gRPC code, the built-in
hardware profiles and the entry points must all come from the wheel. torch is
not installed at all, so `fleetcast serve` running proves it never needs it.
"""

from __future__ import annotations

import json
import platform
import re
import socket
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tools.wheels import ROOT, build_sdist, build_wheel, clean_env, wheelhouse

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCORE = """
import json, sys, time
import grpc, numpy as np
from edge_agent.local_api import decode_tensor, encode_tensor
from edge_agent.proto.fleetcast.v1 import scoring_pb2 as pb, scoring_pb2_grpc as pb_grpc

address, rows, name = sys.argv[1:4]
x = np.load(rows)
deadline = time.monotonic() + 90
with grpc.insecure_channel(address) as channel:
    stub = pb_grpc.EdgeScoringStub(channel)
    while True:  # NOT_FOUND until the deploy has been verified, self-tested and switched
        try:
            reply = stub.Predict(
                pb.PredictRequest(name=name, inputs=[encode_tensor("input", x)]), timeout=30
            )
            break
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
labels = decode_tensor(reply.outputs[0]).argmax(axis=1).tolist()
print(json.dumps({"package_id": reply.package_id, "labels": labels, "stubs": pb.__file__}))
"""


@dataclass(frozen=True)
class Install:
    venv: Path
    home: Path  # a working directory outside the repository
    env: dict[str, str]

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(args), cwd=self.home, env=self.env, capture_output=True, text=True,
            timeout=timeout,
        )  # fmt: skip

    def python(self, code: str, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run(self.bin("python"), "-c", code, *args)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Install:
    base = tmp_path_factory.mktemp("installed")
    wheel = build_wheel(base / "dist")
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    house = base / "wheelhouse"
    wheelhouse(wheel, "agent,server", platform.machine(), python, house)
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=clean_env())
    subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-index",
            f"--find-links={house}",
            "fleetcast[agent,server]",
        ],  # fmt: skip
        check=True,
        cwd=base,
        env=clean_env(),
    )
    env = clean_env()
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    home = base / "home"
    home.mkdir()
    return Install(venv, home, env)


def test_the_install_is_the_wheel_not_the_source_tree(installed: Install) -> None:
    probe = installed.python(
        "import json, sys, edge_agent, control_plane; "
        "print(json.dumps([edge_agent.__file__, control_plane.__file__, sys.path]))"
    )
    assert probe.returncode == 0, probe.stderr
    agent_file, cp_file, path = json.loads(probe.stdout)
    site = installed.venv / "lib"
    assert Path(agent_file).is_relative_to(site) and Path(cp_file).is_relative_to(site)
    assert not any((installed.home / p).resolve().is_relative_to(ROOT) for p in path), path


def test_every_agent_module_imports_without_the_heavy_stack(installed: Install) -> None:
    probe = installed.python(
        "import importlib, importlib.util, json, pkgutil, sys, edge_agent\n"
        "names = [m.name for m in pkgutil.walk_packages(edge_agent.__path__, 'edge_agent.')\n"
        "         if not m.name.endswith('.__main__')]  # __main__ runs the CLI\n"
        "for name in names: importlib.import_module(name)\n"
        "heavy = ['torch', 'flask', 'onnx', 'litert_torch', 'ai_edge_quantizer', 'sklearn']\n"
        "print(json.dumps({'modules': names,\n"
        "  'installed': [h for h in heavy if importlib.util.find_spec(h)],\n"
        "  'loaded': [h for h in heavy if h in sys.modules]}))"
    )
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)
    source = {
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in (ROOT / "edge_agent").rglob("*.py")
    } - {"edge_agent", "edge_agent.__main__"}
    assert set(found["modules"]) == source
    assert {"edge_agent.transport.grpc", "edge_agent.local_api"} <= set(found["modules"])
    assert found["loaded"] == []
    # the server extra brings Flask; the compile tool chain is nowhere
    assert "torch" not in found["installed"] and "onnx" not in found["installed"]


def test_versions_and_builtin_profiles(installed: Install) -> None:
    meta = installed.python("import importlib.metadata as m; print(m.version('fleetcast'))")
    version = meta.stdout.strip()
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", version), meta.stderr
    assert installed.run("fleetcast", "--version").stdout.strip() == f"fleetcast, version {version}"
    agent = installed.run("fleetcast-agent", "--version")
    assert agent.stdout.strip() == f"fleetcast-agent, version {version}"

    listed = installed.run("fleetcast", "profiles", "list")
    assert listed.returncode == 0, listed.stderr
    ids = {line.split()[0] for line in listed.stdout.splitlines()}
    assert ids == {p.stem for p in (ROOT / "hardware-profiles").glob("*.toml")}


@pytest.fixture()
def control_plane(
    installed: Install, tmp_path: Path, keys: Any
) -> Iterator[tuple[int, dict[str, str]]]:
    """`fleetcast serve` from the install (gRPC only) with the test signing key."""
    data = tmp_path / "cp"
    (data / "keys").mkdir(parents=True)
    (data / "keys" / "fleetcast.pub").write_bytes(keys.public.read_bytes())
    env = {**installed.env, "FLEETCAST_DATA_DIR": str(data)}
    proc = subprocess.Popen(
        ["fleetcast", "serve", "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0"],
        cwd=installed.home, env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    line = proc.stderr.readline()
    match = re.search(r"gRPC on port (\d+).*HTTP on port (\d+)", line)
    try:
        assert match, line + proc.stderr.read()
        # the operator's CLI is an API client: the first admin token (bootstrap), then --server
        init = installed_run(installed, env, "fleetcast", "admin", "init", "--json")
        assert init.returncode == 0, init.stderr
        env = {
            **env,
            "FLEETCAST_SERVER": f"http://127.0.0.1:{match.group(2)}",
            "FLEETCAST_TOKEN": json.loads(init.stdout)["token"],
            "XDG_CONFIG_HOME": str(tmp_path / "config"),
        }
        yield int(match.group(1)), env
    finally:
        proc.terminate()
        assert proc.wait(20) == 0


def installed_run(installed: Install, env: dict[str, str], *args: str) -> Any:
    return Install(installed.venv, installed.home, env).run(*args)


def _healthcheck(port: int) -> list[str]:
    """The Dockerfile's HEALTHCHECK command, pointed at ``port``."""
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    match = re.search(r"^\s*CMD (\[.*\])$", dockerfile.split("HEALTHCHECK", 1)[1], re.M)
    assert match, "no HEALTHCHECK CMD in deploy/Dockerfile"
    command: list[str] = json.loads(match.group(1))
    return [c.replace("127.0.0.1:50051", f"127.0.0.1:{port}") for c in command]


def test_the_containers_health_check_sees_the_server(
    installed: Install, control_plane: tuple[int, dict[str, str]]
) -> None:
    port, _ = control_plane
    assert installed.run(*_healthcheck(port)).returncode == 0
    with socket.socket() as unused:  # a port where nothing listens
        unused.bind(("127.0.0.1", 0))
        dead = unused.getsockname()[1]
    assert installed.run(*_healthcheck(dead)).returncode != 0


def test_enroll_deploy_and_score_from_the_install(
    installed: Install, control_plane: tuple[int, dict[str, str]], edge_packages: Any,
    tmp_path: Path,
) -> None:  # fmt: skip
    port, cp_env = control_plane
    ops = Install(installed.venv, installed.home, cp_env)
    token = ops.run("fleetcast", "devices", "token", "--device-id", "dev-wheel")
    assert token.returncode == 0, token.stderr
    state = tmp_path / "device"
    enrolled = installed.run(
        "fleetcast-agent", "enroll", "--server", f"127.0.0.1:{port}", "--token",
        token.stdout.strip(), "--device-id", "dev-wheel", "--state-dir", str(state),
    )  # fmt: skip
    assert enrolled.returncode == 0, enrolled.stderr

    log = (tmp_path / "agent.log").open("w")
    agent = subprocess.Popen(
        ["fleetcast-agent", "run", "--state-dir", str(state), "--public-key",
         str(edge_packages.public_key), "--device-id", "dev-wheel", "--listen", "127.0.0.1:0",
         "--server", f"grpc://127.0.0.1:{port}"],
        cwd=installed.home, env=installed.env, stdout=subprocess.PIPE, stderr=log, text=True,
    )  # fmt: skip
    try:
        assert agent.stdout is not None
        line = agent.stdout.readline()
        assert line, (tmp_path / "agent.log").read_text()
        address = json.loads(line)["address"]

        from edge_agent.package import read_package

        manifest = read_package(Path(edge_packages.onnx).read_bytes())[0]
        model, version = manifest.model_name, manifest.model_version
        for step in (
            ["models", "create", model, "--owner", "ml"],
            ["versions", "register", model, version, "--intended-use", "digits",
             "--training-data", "sklearn digits", "--owner", "ml"],
            ["packages", "add", str(edge_packages.onnx)],
            ["versions", "stage", model, version, "compiled"],
            ["devices", "set", "dev-wheel", "--profile", manifest.profile.id],
            ["deploy", model, version, "--device", "dev-wheel"],
        ):  # fmt: skip
            done = ops.run("fleetcast", *step)
            assert done.returncode == 0, (step, done.stderr)

        rows = edge_packages.x[:64]
        np.save(tmp_path / "rows.npy", rows)
        scored = installed.python(SCORE, address, str(tmp_path / "rows.npy"), "digits-mlp")
        assert scored.returncode == 0, scored.stderr + (tmp_path / "agent.log").read_text()
        reply = json.loads(scored.stdout)
    finally:
        agent.terminate()
        agent.wait(20)
        log.close()

    from edge_agent.runtime import open_model

    model = open_model(edge_packages.onnx, public_key=edge_packages.public_key)
    expected = model.predict({"input": rows})["output"].argmax(axis=1).tolist()
    assert reply["labels"] == expected
    assert reply["package_id"] == model.manifest.package_id
    assert Path(reply["stubs"]).is_relative_to(installed.venv)


def test_a_wheel_built_from_the_sdist_has_the_same_files(tmp_path: Path) -> None:
    """pip building from the sdist (no git, no work tree) gets the stubs and profiles too."""
    direct = build_wheel(tmp_path / "direct")
    sdist = build_sdist(tmp_path / "sdist")
    from_sdist = build_wheel(tmp_path / "from-sdist", sdist)

    def names(wheel: Path) -> set[str]:
        with zipfile.ZipFile(wheel) as archive:
            return {n for n in archive.namelist() if ".dist-info/" not in n}

    assert names(from_sdist) == names(direct)
    assert {f"control_plane/hardware_profiles/{p.name}" for p in
            (ROOT / "hardware-profiles").glob("*.toml")} <= names(direct)  # fmt: skip
    assert "edge_agent/proto/fleetcast/v1/scoring_pb2_grpc.py" in names(direct)
    assert not any(n.startswith(("protos/", "tests/", "tools/")) for n in names(direct))
