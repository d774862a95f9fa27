"""Build the transport a device's settings name, with the credentials it enrolled for."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from edge_agent.core.netaddr import is_loopback
from edge_agent.core.topics import device_login
from edge_agent.errors import EdgeError
from edge_agent.transport.base import Transport

CREDENTIALS = "credentials.json"


class TransportConfigError(EdgeError):
    pass


def parse_server(server: str) -> tuple[str, str, int]:
    """``grpc://host:port`` or ``mqtt://host:port`` -> (scheme, host, port)."""
    scheme, sep, rest = server.partition("://")
    host, _, port = rest.rpartition(":")
    if not sep or scheme not in ("grpc", "mqtt") or not host or not port.isdigit():
        raise TransportConfigError(
            f"server {server!r}: expected grpc://HOST:PORT or mqtt://HOST:PORT"
        )
    return scheme, host, int(port)


def check_plaintext(host: str, ca_cert: Path | None, insecure: bool) -> None:
    """Refuse a plaintext connection off this host unless the operator said --insecure."""
    if ca_cert is None and not insecure and not is_loopback(host):
        raise TransportConfigError(
            f"refusing to talk to {host} without TLS (device tokens and MQTT passwords would "
            "travel in clear): pass --ca-cert CA.pem, or --insecure to accept plaintext"
        )


def save_credentials(state_dir: Path, credentials: dict[str, Any]) -> Path:
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / CREDENTIALS
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(credentials, handle)
    return path


def load_credentials(state_dir: Path) -> dict[str, str]:
    path = state_dir / CREDENTIALS
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise TransportConfigError(
            f"{path} is missing: enroll first (`fleetcast-agent enroll`)"
        ) from exc
    except ValueError as exc:
        raise TransportConfigError(f"{path} is not JSON: {exc}") from exc
    return {str(k): str(v) for k, v in data.items()}


def make_transport(
    server: str,
    state_dir: Path,
    ca_cert: Path | None = None,
    *,
    insecure: bool = False,
    client_cert: Path | None = None,
    client_key: Path | None = None,
) -> Transport:
    """The transport to ``server`` for the device enrolled in ``state_dir``.

    TLS when ``ca_cert`` is given (mutual TLS with ``client_cert``/``client_key``);
    plaintext only to a loopback address, or anywhere with ``insecure``.
    """
    scheme, host, port = parse_server(server)
    check_plaintext(host, ca_cert, insecure)
    if (client_cert is None) != (client_key is None):
        raise TransportConfigError("a client certificate and its key go together")
    creds = load_credentials(state_dir)
    downloads = state_dir / "downloads"
    if scheme == "grpc":
        from edge_agent.transport.grpc import GrpcTls, GrpcTransport

        tls = GrpcTls(ca=ca_cert, cert=client_cert, key=client_key) if ca_cert else None
        return GrpcTransport(f"{host}:{port}", creds["device_token"], downloads, tls=tls)
    from edge_agent.transport.mqtt import MqttTransport

    return MqttTransport(
        host,
        port,
        creds["device_id"],
        creds["mqtt_password"],
        downloads,
        ca_cert=ca_cert,
        username=creds.get("mqtt_username") or device_login(creds["device_id"]),
        client_cert=client_cert,
        client_key=client_key,
    )
