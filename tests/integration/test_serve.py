"""`fleetcast serve` and the admin CLI as an operator runs them, plus MQTT over TLS."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from control_plane.server import ControlPlane, ServeOptions, ServeProcess
from control_plane.transport.broker import BrokerTls
from edge_agent.transport.mqtt import MqttTransport
from tests.integration.transport_support import RawMqtt, enroll_device, make_certs, wait_until

pytestmark = pytest.mark.integration


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], env=env, capture_output=True, text=True, timeout=120
    )


def _enroll(
    env: dict[str, str], grpc_port: int, token: str, state: Path
) -> subprocess.CompletedProcess[str]:
    """`fleetcast-agent enroll` as dev-cli into ``state``."""
    return _cli(env, "edge_agent", "enroll", "--server", f"127.0.0.1:{grpc_port}", "--token",
                token, "--device-id", "dev-cli", "--state-dir", str(state))  # fmt: skip


def _ok(env: dict[str, str], *args: str) -> str:
    """`fleetcast ARGS` must succeed; its stdout."""
    done = _cli(env, "control_plane", *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_serve_enroll_deploy_revoke_through_the_clis(
    tmp_path: Path, keys: Any, digits_mlp: Any, compile_digits: Any
) -> None:
    (outcome,) = compile_digits(digits_mlp, ["x86-64-generic"])
    data_dir = tmp_path / "data"
    (data_dir / "keys").mkdir(parents=True)
    (data_dir / "keys" / "fleetcast.pub").write_bytes(keys.public.read_bytes())
    server = ServeProcess(data_dir)
    try:
        grpc_port, mqtt_port = server.grpc_port, server.mqtt_port
        # the one local command: the first admin token; every other one is an API client
        admin = json.loads(_ok(server.env, "admin", "init", "--json"))["token"]
        assert (data_dir / "keys" / "samples.key").stat().st_mode & 0o777 == 0o600
        env = {
            **server.env,
            "FLEETCAST_SERVER": f"http://127.0.0.1:{server.http_port}",
            "FLEETCAST_TOKEN": admin,
            "XDG_CONFIG_HOME": str(tmp_path / "config"),
            "FLEETCAST_DATA_DIR": str(tmp_path / "elsewhere"),  # the CLI never opens the store
        }
        token = _ok(env, "devices", "token", "--device-id", "dev-cli").strip()
        state = tmp_path / "device"
        enrolled = _enroll(env, grpc_port, token, state)
        assert enrolled.returncode == 0, enrolled.stderr
        creds = json.loads((state / "credentials.json").read_text())
        assert oct((state / "credentials.json").stat().st_mode & 0o777) == "0o600"
        reused = _enroll(env, grpc_port, token, tmp_path / "again")
        assert reused.returncode != 0 and "already used" in reused.stderr

        _ok(env, "models", "create", "digits-mlp", "--owner", "ml")
        _ok(env, "versions", "register", "digits-mlp", "1", "--intended-use", "digits",
            "--training-data", "sklearn digits", "--owner", "ml")  # fmt: skip
        added = json.loads(_ok(env, "packages", "add", str(outcome.path), "--json"))
        sha = hashlib.sha256(Path(outcome.path).read_bytes()).hexdigest()
        assert added["sha256"] == sha
        _ok(env, "versions", "stage", "digits-mlp", "1", "compiled")
        _ok(env, "devices", "set", "dev-cli", "--profile", "x86-64-generic", "--label", "site=lab")
        no_device = _cli(env, "control_plane", "deploy", "digits-mlp", "1", "--device", "nobody")
        assert no_device.returncode != 0 and "nobody" in no_device.stderr

        device = MqttTransport(
            "127.0.0.1", mqtt_port, "dev-cli", creds["mqtt_password"], tmp_path / "dl"
        )
        try:
            assert device.connected.wait(10)
            sent = json.loads(
                _ok(env, "deploy", "digits-mlp", "1", "--selector", "site=lab", "--json")
            )
            assert (sent["device_id"], sent["sha256"]) == ("dev-cli", sha)
            commands: list[Any] = []
            # the command was written through the API; the server's notifier publishes it
            assert wait_until(lambda: commands.extend(device.poll_commands(0.2)) or commands)
            assert commands[0].type == "deploy" and commands[0].body["sha256"] == sha
            assert device.fetch_package(sha) == Path(outcome.path).read_bytes()

            assert "revoked dev-cli" in _ok(env, "devices", "revoke", "dev-cli")
            assert wait_until(lambda: not device.connected.is_set())
            again = RawMqtt(mqtt_port, "devices/dev-cli", creds["mqtt_password"], "dev-cli-2")
            assert again.connect_result is not None and again.connect_result.is_failure
            again.close()
        finally:
            device.close()
        listed = json.loads(_ok(env, "devices", "list", "--json"))
        assert (listed["id"], listed["status"], listed["labels"]) == (
            "dev-cli", "revoked", {"site": "lab"}
        )  # fmt: skip
        actions = {json.loads(line)["action"] for line in _ok(env, "audit", "--json").splitlines()}
        assert {"enrollment_token.create", "package.add", "device.revoke"} <= actions
        assert not (tmp_path / "elsewhere").exists()
    finally:
        assert server.stop() == 0


def test_mqtt_over_tls(tmp_path: Path, keys: Any) -> None:
    certs = make_certs(tmp_path / "certs")
    plane = ControlPlane(
        ServeOptions(
            data_dir=tmp_path / "cp",
            public_key=keys.public,
            grpc_address="127.0.0.1:0",
            mqtt=True,
            mqtt_tls=BrokerTls(cert=certs.server_cert, key=certs.server_key, ca=certs.ca),
        )
    ).start()
    try:
        assert plane.services is not None and plane.mqtt_port is not None
        creds = enroll_device(plane, "dev-tls")
        device = MqttTransport(
            "localhost",
            plane.mqtt_port,
            "dev-tls",
            creds["mqtt_password"],
            tmp_path / "dl",
            ca_cert=certs.ca,
        )
        try:
            assert device.connected.wait(10)
            record = plane.services.commands.send("dev-tls", "config", {"window_seconds": 5}, "op")
            commands: list[Any] = []
            assert wait_until(lambda: commands.extend(device.poll_commands(0.2)) or commands)
            assert commands[0].id == record.id
        finally:
            device.close()
        plain = RawMqtt(plane.mqtt_port, "devices/dev-tls", creds["mqtt_password"], "dev-tls-plain")
        assert not plain.connected.is_set()  # a plain-text client gets no session on a TLS port
        plain.close()
    finally:
        plane.stop()
