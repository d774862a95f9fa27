"""Helpers for transport tests: a running control plane, enrolled devices, raw MQTT clients."""

from __future__ import annotations

import datetime as dt
import ipaddress
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion

from control_plane.server import ControlPlane
from edge_agent.transport.grpc import enroll

HOST = {"os": "linux", "arch": "x86_64", "cpu_features": ["avx2"], "runtimes": ["onnxruntime"]}


def enroll_device(plane: ControlPlane, device_id: str, tls: Any = None) -> dict[str, str]:
    assert plane.services is not None
    token = plane.services.enrollment.create_token("test-operator", device_id)
    return enroll(f"127.0.0.1:{plane.grpc_port}", token, device_id, HOST, tls)


class RawMqtt:
    """A bare paho client, to act as a device (or an intruder) would."""

    def __init__(
        self, port: int, username: str | None, password: str | None, client_id: str
    ) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self.connect_result: Any = None
        self.suback: list[Any] = []
        self.connected = threading.Event()
        self.answered = threading.Event()
        self.disconnected = threading.Event()
        client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id)
        if username is not None:
            client.username_pw_set(username, password)
        client.on_connect = self._on_connect
        client.on_message = lambda _c, _u, m: self.messages.append(m)
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = lambda *_: self.disconnected.set()
        self.client = client
        client.connect("127.0.0.1", port, keepalive=10)
        client.loop_start()
        self.answered.wait(5)

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.connect_result = reason
        if not reason.is_failure:
            self.connected.set()
        self.answered.set()

    def _on_subscribe(self, _c: Any, _u: Any, _mid: Any, reasons: Any, _p: Any) -> None:
        self.suback.extend(reasons)

    def subscribe(self, topic: str) -> list[Any]:
        self.suback.clear()
        self.client.subscribe(topic, qos=1)
        for _ in range(100):
            if self.suback:
                break
            threading.Event().wait(0.05)
        return list(self.suback)

    def publish(self, topic: str, payload: bytes | str) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def make_certs(directory: Path) -> Certs:
    """A CA, a server certificate for localhost/127.0.0.1, and a client certificate."""
    now = dt.datetime.now(dt.UTC)

    def issue(
        subject: str,
        key: Any,
        issuer_key: Any,
        issuer: x509.Name | None,
        ca: bool,
        san: list[x509.GeneralName] | None,
    ) -> x509.Certificate:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer or name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = issue("fleetcast-test-ca", ca_key, ca_key, None, True, None)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = issue(
        "localhost",
        server_key,
        ca_key,
        ca.subject,
        False,
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = issue("device-tls", client_key, ca_key, ca.subject, False, None)
    paths = Certs(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
    )
    paths.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths.server_cert.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths.client_cert.write_bytes(client.public_bytes(serialization.Encoding.PEM))
    _write_key(paths.server_key, server_key)
    _write_key(paths.client_key, client_key)
    return paths


def wait_until(predicate: Any, timeout: float = 20.0) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes; its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())
