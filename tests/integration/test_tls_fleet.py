"""Issue #7: TLS by default. Refusals off loopback, and a whole fleet on `fleetcast certs` TLS.

Servers bind 127.0.0.1 only; the non-loopback refusals are checked before any
socket is opened, so no traffic leaves this host.
"""

from __future__ import annotations

import hashlib
import json
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from control_plane.server import (
    ServeOptions,
    ServeProcess,
    check_plaintext,
    insecure_notice,
    write_insecure_notice,
)
from control_plane.transport.grpc_server import TlsConfig
from control_plane.transport.mqtt import MqttEndpoint
from edge_agent.outbox import OutboxMessage
from edge_agent.transport.factory import TransportConfigError, make_transport
from tests.integration.cli_support import deploy_file, operator_env
from tests.integration.transport_support import RawMqtt, wait_until

pytestmark = pytest.mark.integration

UNROUTED = "192.0.2.10"  # TEST-NET-1: never contacted, the refusal comes first


def _run(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def _env(data_dir: Path) -> dict[str, str]:
    import os

    return {
        **os.environ,
        "FLEETCAST_DATA_DIR": str(data_dir),
        "PATH": os.environ["PATH"] + ":/usr/sbin",
    }


# ------------------------------------------------------------------ refusals


def test_serve_refuses_plaintext_off_loopback(tmp_path: Path) -> None:
    env = _env(tmp_path / "data")
    for args in (
        ["--grpc", "0.0.0.0:0"],
        ["--grpc", f"{UNROUTED}:50051"],
        ["--grpc", "127.0.0.1:0", "--mqtt", "--mqtt-bind", "0.0.0.0", "--mqtt-port", "0"],
        ["--grpc", "127.0.0.1:0", "--mqtt-broker", f"{UNROUTED}:1883",
         "--mqtt-username", "cp", "--mqtt-password", "pw"],
    ):  # fmt: skip
        result = _run(env, "control_plane", "serve", *args, timeout=30)
        assert result.returncode != 0, args
        assert "refusing to serve" in result.stderr and "without TLS" in result.stderr, args
        assert "--insecure" in result.stderr and "Traceback" not in result.stderr


def test_insecure_is_warned_of_at_start_and_in_devices_list(tmp_path: Path) -> None:
    options = ServeOptions(data_dir=tmp_path / "data", grpc_address="0.0.0.0:50051", insecure=True)
    exposures = check_plaintext(options)  # the check serve runs before it binds anything
    assert exposures == ["gRPC on 0.0.0.0:50051 without TLS"]
    tls = TlsConfig(cert=tmp_path / "c.pem", key=tmp_path / "k.pem")
    assert (
        check_plaintext(ServeOptions(data_dir=tmp_path, grpc_address="[::]:1", grpc_tls=tls)) == []
    )
    external = MqttEndpoint(UNROUTED, 8883, "cp", "pw", tls=True, ca_cert="ca.pem")
    assert check_plaintext(ServeOptions(data_dir=tmp_path, mqtt_external=external)) == []

    (tmp_path / "data").mkdir()
    write_insecure_notice(tmp_path / "data", exposures)
    assert insecure_notice(tmp_path / "data") == (
        "fleetcast serve runs with --insecure: gRPC on 0.0.0.0:50051 without TLS"
    )
    # on the control plane's host the CLI warns, before it asks the API (none answers here)
    listed = _run(
        _env(tmp_path / "data"),
        "control_plane",
        "devices",
        "list",
        "--server",
        "http://127.0.0.1:9",
    )
    assert "warning: fleetcast serve runs with --insecure" in listed.stderr
    write_insecure_notice(tmp_path / "data", [])
    assert insecure_notice(tmp_path / "data") is None


def test_agents_refuse_a_plaintext_server_off_loopback(tmp_path: Path, keys: Any) -> None:
    env = _env(tmp_path / "unused")
    enrolled = _run(env, "edge_agent", "enroll", "--server", f"{UNROUTED}:50051",
                    "--token", "enr_x", "--device-id", "dev-a",
                    "--state-dir", str(tmp_path / "s"))  # fmt: skip
    assert enrolled.returncode != 0
    assert f"refusing to talk to {UNROUTED} without TLS" in enrolled.stderr
    assert "--insecure" in enrolled.stderr and "Traceback" not in enrolled.stderr
    for scheme in ("grpc", "mqtt"):
        ran = _run(env, "edge_agent", "run", "--state-dir", str(tmp_path / "s"), "--public-key",
                   str(keys.public), "--device-id", "dev-a", "--server",
                   f"{scheme}://{UNROUTED}:1")  # fmt: skip
        assert ran.returncode != 0 and "without TLS" in ran.stderr, ran.stderr
        with pytest.raises(TransportConfigError, match="without TLS"):
            make_transport(f"{scheme}://{UNROUTED}:1", tmp_path / "s")
    # loopback stays allowed in plaintext (then the missing enrollment is what is reported)
    with pytest.raises(TransportConfigError, match="enroll first"):
        make_transport("grpc://127.0.0.1:1", tmp_path / "s")


# ------------------------------------------------------------------ a whole fleet over TLS


def test_a_fleet_over_tls_with_fleetcast_certs(
    tmp_path: Path, keys: Any, digits_mlp: Any, compile_digits: Any
) -> None:
    (outcome,) = compile_digits(digits_mlp, ["x86-64-generic"])
    data_dir = tmp_path / "data"
    (data_dir / "keys").mkdir(parents=True)
    (data_dir / "keys" / "fleetcast.pub").write_bytes(keys.public.read_bytes())
    env = _env(data_dir)
    made = _run(env, "control_plane", "certs", "init", "--host", "localhost", "--host", "cp.test")
    assert made.returncode == 0, made.stderr
    tls = data_dir / "tls"
    assert stat.S_IMODE((tls / "ca.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tls / "server.key").stat().st_mode) == 0o600
    device_cert = _run(env, "control_plane", "certs", "device", "dev-tls")
    assert device_cert.returncode == 0, device_cert.stderr
    assert (tls / "devices" / "dev-tls.pem").exists()

    server = ServeProcess(data_dir, "--tls-cert", str(tls / "server.pem"), "--tls-key",
                          str(tls / "server.key"), "--tls-ca", str(tls / "ca.pem"))  # fmt: skip
    try:
        env = operator_env(env, server.http_port, tmp_path / "config")
        token = _run(env, "control_plane", "devices", "token", "--device-id", "dev-tls")
        assert token.returncode == 0, token.stderr
        state = tmp_path / "device"
        enrolled = _run(env, "edge_agent", "enroll", "--server", f"localhost:{server.grpc_port}",
                        "--token", token.stdout.strip(), "--device-id", "dev-tls",
                        "--state-dir", str(state), "--ca-cert", str(tls / "ca.pem"))  # fmt: skip
        assert enrolled.returncode == 0, enrolled.stderr

        grpc_device = make_transport(f"grpc://localhost:{server.grpc_port}", state, tls / "ca.pem")
        try:
            status = OutboxMessage(1, "status", {"device_id": "dev-tls", "sequence": 1}, 1)
            assert grpc_device.send([status]) == [1]
        finally:
            grpc_device.close()

        mqtt_device: Any = make_transport(
            f"mqtt://localhost:{server.mqtt_port}", state, tls / "ca.pem"
        )
        try:
            assert mqtt_device.connected.wait(10)
            deploy_file(env, Path(outcome.path), "dev-tls")
            commands: list[Any] = []
            assert wait_until(lambda: commands.extend(mqtt_device.poll_commands(0.2)) or commands)
            sha = hashlib.sha256(Path(outcome.path).read_bytes()).hexdigest()
            assert commands[0].type == "deploy" and commands[0].body["sha256"] == sha
            assert mqtt_device.fetch_package(sha) == Path(outcome.path).read_bytes()
        finally:
            mqtt_device.close()

        creds = json.loads((state / "credentials.json").read_text())
        plain = RawMqtt(server.mqtt_port, creds["mqtt_username"], creds["mqtt_password"], "p")
        assert not plain.connected.is_set()  # no plaintext session on the TLS listener
        plain.close()
        listed = _run(env, "control_plane", "devices", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        assert json.loads(listed.stdout)["id"] == "dev-tls"
        assert "insecure" not in listed.stderr
    finally:
        assert server.stop() == 0


def test_mutual_tls_on_both_transports(tmp_path: Path, keys: Any) -> None:
    from control_plane.certs import make_ca, make_device_cert, make_server_cert
    from control_plane.server import ControlPlane
    from control_plane.transport.broker import BrokerTls
    from edge_agent.transport.factory import save_credentials
    from edge_agent.transport.grpc import GrpcTls
    from tests.integration.transport_support import enroll_device

    tls = tmp_path / "tls"
    ca = make_ca(tls)
    server = make_server_cert(tls, ["localhost"])
    device = make_device_cert(tls, "dev-m")
    plane = ControlPlane(
        ServeOptions(
            data_dir=tmp_path / "cp",
            public_key=keys.public,
            grpc_address="127.0.0.1:0",
            grpc_tls=TlsConfig(server.cert, server.key, client_ca=ca.cert),
            mqtt=True,
            mqtt_tls=BrokerTls(server.cert, server.key, ca.cert, require_client_cert=True),
        )
    ).start()
    try:
        assert plane.services is not None
        client = GrpcTls(ca=ca.cert, cert=device.cert, key=device.key)
        state = tmp_path / "state"
        save_credentials(state, enroll_device(plane, "dev-m", tls=client))
        for scheme, port in (("grpc", plane.grpc_port), ("mqtt", plane.mqtt_port)):
            transport: Any = make_transport(
                f"{scheme}://localhost:{port}", state, ca.cert,
                client_cert=device.cert, client_key=device.key,
            )  # fmt: skip
            try:
                if scheme == "mqtt":
                    assert transport.connected.wait(10)
                record = plane.services.commands.send(
                    "dev-m", "config", {"window_seconds": 5}, "op"
                )
                got: list[Any] = []
                assert wait_until(
                    lambda t=transport, c=got, r=record: (
                        c.extend(t.poll_commands(0.2)) or r.id in [x.id for x in c]
                    )
                )
                transport.ack(next(c for c in got if c.id == record.id), True)
                assert wait_until(
                    lambda r=record, f=plane.services: f.commands.get(r.id).status == "ok"
                )
            finally:
                transport.close()
        # the CA alone is not enough on MQTT either: no client certificate, no session
        no_cert: Any = make_transport(f"mqtt://localhost:{plane.mqtt_port}", state, ca.cert)
        try:
            assert not no_cert.connected.wait(2)
        finally:
            no_cert.close()
    finally:
        plane.stop()
