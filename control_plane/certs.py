"""`fleetcast certs`: a private CA, the server's certificate and device certificates.

For fleets without a PKI of their own. Everything is written under one
directory (default ``<data dir>/tls``): ``ca.pem`` (give it to devices),
``ca.key`` (stays on the control-plane host, 0600), ``server.pem``/``server.key``
(for ``fleetcast serve --tls-cert/--tls-key``; its SANs are the hosts and IPs
the devices dial, plus localhost and 127.0.0.1) and ``devices/<id>.pem``/``.key``
(optional client certificates for mutual TLS). Keys are ECDSA P-256.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from control_plane.enrollment import check_device_id
from control_plane.errors import Conflict, InvalidInput
from control_plane.signing import write_private

CA_DAYS = 3650
LEAF_DAYS = 825


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fleetcast"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _write(issued: Issued, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Issued:
    issued.cert.parent.mkdir(parents=True, exist_ok=True)
    issued.cert.parent.chmod(0o700)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_private(issued.key, pem)
    write_private(issued.cert, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return issued


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey, days: int
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
    )


def make_ca(directory: Path, force: bool = False) -> Issued:
    """A new CA in ``directory`` (ca.pem, ca.key); Conflict if one exists and not ``force``."""
    issued = Issued(directory / "ca.pem", directory / "ca.key")
    if issued.key.exists() and not force:
        raise Conflict(f"{issued.key} exists; pass --force to make a new CA")
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("fleetcast CA")
    cert = (
        _builder(name, name, key, CA_DAYS)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return _write(issued, cert, key)


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = directory / "ca.pem", directory / "ca.key"
    if not key_path.exists() or not cert_path.exists():
        raise InvalidInput(f"no CA in {directory}: run `fleetcast certs init --host HOST` first")
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except ValueError as exc:
        raise InvalidInput(f"CA in {directory} does not load: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InvalidInput(f"{key_path}: expected an EC private key")
    return cert, key


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys([*hosts, "localhost", "127.0.0.1"]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            if not host or any(c.isspace() or c in "/:" for c in host):
                raise InvalidInput(
                    f"--host {host!r}: expected a DNS name or an IP address"
                ) from None
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def make_server_cert(directory: Path, hosts: list[str]) -> Issued:
    """server.pem/server.key signed by the CA in ``directory``, valid for ``hosts``."""
    ca_cert, ca_key = _load_ca(directory)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder(_name(hosts[0] if hosts else "localhost"), ca_cert.subject, key, LEAF_DAYS)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_san(hosts), critical=False)
        .add_extension(
            # client auth too: the control plane's MQTT bridge presents it to a broker
            # that requires client certificates (mutual TLS)
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return _write(Issued(directory / "server.pem", directory / "server.key"), cert, key)


def make_device_cert(directory: Path, device_id: str) -> Issued:
    """devices/<id>.pem/.key: a client certificate for mutual TLS, CN = the device id."""
    check_device_id(device_id)
    ca_cert, ca_key = _load_ca(directory)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder(_name(device_id), ca_cert.subject, key, LEAF_DAYS)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    devices = directory / "devices"
    return _write(Issued(devices / f"{device_id}.pem", devices / f"{device_id}.key"), cert, key)
