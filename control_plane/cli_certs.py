"""`fleetcast certs`: make the TLS material of a fleet (see control_plane/certs.py)."""

from __future__ import annotations

from pathlib import Path

import click

from control_plane.settings import Settings

# ------------------------------------------------------------------ certs


@click.group()
def certs() -> None:
    """A private CA, the server certificate and device certificates for TLS."""


def _tls_dir(settings: Settings, directory: Path | None) -> Path:
    return directory or settings.data_dir / "tls"


@certs.command("init")
@click.option(
    "--host",
    "hosts",
    multiple=True,
    required=True,
    help="DNS name or IP the devices dial (repeat); localhost and 127.0.0.1 are added.",
)
@click.option("--dir", "directory", type=click.Path(path_type=Path), help="default: <data>/tls")
@click.option("--force", is_flag=True, help="Replace an existing CA (every cert must be re-made).")
@click.pass_obj
def certs_init(
    settings: Settings, hosts: tuple[str, ...], directory: Path | None, force: bool
) -> None:
    """Make a CA and a server certificate for HOSTs."""
    from control_plane.certs import make_ca, make_server_cert

    where = _tls_dir(settings, directory)
    ca = make_ca(where, force=force)
    server = make_server_cert(where, list(hosts))
    click.echo(
        f"CA:     {ca.cert} (give it to devices: --ca-cert)\n"
        f"server: {server.cert} {server.key}\n"
        f"serve:  fleetcast serve --tls-cert {server.cert} --tls-key {server.key} "
        f"--tls-ca {ca.cert}"
    )


@certs.command("server")
@click.option("--host", "hosts", multiple=True, required=True, help="DNS name or IP (repeat).")
@click.option("--dir", "directory", type=click.Path(path_type=Path), help="default: <data>/tls")
@click.pass_obj
def certs_server(settings: Settings, hosts: tuple[str, ...], directory: Path | None) -> None:
    """Re-issue the server certificate (new hosts, or renewal) from the existing CA."""
    from control_plane.certs import make_server_cert

    server = make_server_cert(_tls_dir(settings, directory), list(hosts))
    click.echo(f"server: {server.cert} {server.key}")


@certs.command("device")
@click.argument("device_id")
@click.option("--dir", "directory", type=click.Path(path_type=Path), help="default: <data>/tls")
@click.pass_obj
def certs_device(settings: Settings, device_id: str, directory: Path | None) -> None:
    """A client certificate for DEVICE_ID (for mutual TLS: serve --tls-client-ca)."""
    from control_plane.certs import make_device_cert

    issued = make_device_cert(_tls_dir(settings, directory), device_id)
    click.echo(f"device: {issued.cert} {issued.key} (agent: --client-cert/--client-key)")
