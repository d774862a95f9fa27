"""``fleetcast-agent``: run the device daemon, or hand it a local package to install."""

from __future__ import annotations

import faulthandler
import json
import logging
import signal
import threading
from pathlib import Path
from types import FrameType

import click

from edge_agent import __version__
from edge_agent.errors import EdgeError
from edge_agent.service import install_service
from edge_agent.settings import Settings, SettingsError

logger = logging.getLogger(__name__)


@click.group()
@click.version_option(__version__, prog_name="fleetcast-agent")
@click.option("-v", "--verbose", is_flag=True, help="Log at DEBUG level.")
def main(verbose: bool) -> None:
    """Fleetcast edge agent."""
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1` dumps every stack
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _check_public_key(path: Path) -> None:
    """One line naming the fix when the trusted package key is missing or not a key."""
    from edge_agent.package import load_public_key

    fix = (
        "copy the control plane's fleetcast.pub (made by `fleetcast keys generate`) "
        "to this device and pass --public-key PATH"
    )
    if not path.is_file():
        raise click.UsageError(f"public key {path} not found: {fix}")
    try:
        load_public_key(path)
    except EdgeError as exc:
        raise click.UsageError(f"public key {path}: {exc}; {fix}") from exc


@main.command()
@click.option("--state-dir", type=click.Path(path_type=Path), help="[FLEETCAST_AGENT_STATE_DIR]")
@click.option("--public-key", type=click.Path(path_type=Path), help="Trusted package key (PEM).")
@click.option("--device-id", help="This device's id [FLEETCAST_AGENT_DEVICE_ID].")
@click.option("--listen", help="Local API: unix:PATH or 127.0.0.1:PORT.")
@click.option("--server", help="grpc://HOST:PORT or mqtt://HOST:PORT [FLEETCAST_AGENT_SERVER].")
@click.option("--ca-cert", help="CA (PEM) for TLS to the server [FLEETCAST_AGENT_CA_CERT].")
@click.option(
    "--client-cert",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    envvar="FLEETCAST_AGENT_CLIENT_CERT",
    help="This device's certificate, for a server that wants mutual TLS.",
)
@click.option(
    "--client-key",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    envvar="FLEETCAST_AGENT_CLIENT_KEY",
)
@click.option(
    "--insecure",
    is_flag=True,
    envvar="FLEETCAST_AGENT_INSECURE",
    help="Allow plaintext to a server that is not on this host (credentials in clear).",
)
@click.option(
    "--metrics",
    "metrics_address",
    envvar="FLEETCAST_AGENT_METRICS",
    help="HOST:PORT to serve Prometheus /metrics on (e.g. 127.0.0.1:9101; off by default).",
)
def run(
    state_dir: Path | None,
    public_key: Path | None,
    device_id: str | None,
    listen: str | None,
    server: str | None,
    ca_cert: str | None,
    client_cert: Path | None,
    client_key: Path | None,
    insecure: bool,
    metrics_address: str | None,
) -> None:
    """Recover the state directory, serve the installed models, and stay up until SIGTERM."""
    from edge_agent.agent import Agent
    from edge_agent.local_api import serve
    from edge_agent.transport.factory import make_transport

    try:
        settings = Settings.from_env(
            state_dir=state_dir,
            public_key=public_key,
            device_id=device_id,
            listen=listen,
            server=server,
            ca_cert=ca_cert,
        )
        transport = (
            make_transport(
                settings.server,
                settings.state_dir,
                Path(settings.ca_cert) if settings.ca_cert else None,
                insecure=insecure,
                client_cert=client_cert,
                client_key=client_key,
            )
            if settings.server
            else None
        )
        _check_public_key(settings.public_key)
    except (SettingsError, EdgeError) as exc:
        raise click.UsageError(str(exc)) from exc
    if insecure and transport is not None and not settings.ca_cert:
        logger.warning("--insecure: talking to %s in plaintext", settings.server)
    agent = Agent(settings, transport)
    metrics_port = None
    try:
        agent.start()
        local, bound = serve(agent, settings.listen_address)
        if metrics_address:
            from edge_agent.metrics import serve_metrics

            metrics_server, metrics_port = serve_metrics(agent, metrics_address)
    except (EdgeError, OSError, ValueError) as exc:
        raise click.ClickException(f"cannot start the agent: {exc}") from exc
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    # one line on stdout that supervisors and tests can wait for
    serving: dict[str, object] = {
        "event": "serving",
        "address": bound,
        "models": sorted(agent.models),
    }
    if metrics_port is not None:
        serving["metrics_port"] = metrics_port
    click.echo(json.dumps(serving), nl=True)
    stop.wait()
    logger.info("stopping")
    local.stop(grace=5).wait()
    if metrics_port is not None:
        metrics_server.shutdown()
    agent.close()
    if transport is not None:
        transport.close()


@main.command()
@click.option("--server", required=True, help="The control plane's gRPC address, HOST:PORT.")
@click.option("--token", required=True, help="One-time enrollment token.")
@click.option("--device-id", required=True)
@click.option("--state-dir", required=True, type=click.Path(path_type=Path))
@click.option("--ca-cert", type=click.Path(path_type=Path, exists=True), help="CA for TLS.")
@click.option("--client-cert", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--client-key", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option(
    "--insecure",
    is_flag=True,
    envvar="FLEETCAST_AGENT_INSECURE",
    help="Allow plaintext to a server that is not on this host (the token travels in clear).",
)
def enroll(
    server: str,
    token: str,
    device_id: str,
    state_dir: Path,
    ca_cert: Path | None,
    client_cert: Path | None,
    client_key: Path | None,
    insecure: bool,
) -> None:
    """Trade an enrollment token for this device's credentials (kept 0600 in the state dir)."""
    from dataclasses import asdict

    from edge_agent.core.netaddr import split_host_port
    from edge_agent.errors import EdgeError
    from edge_agent.host import detect_host
    from edge_agent.transport.base import TransportError
    from edge_agent.transport.factory import check_plaintext, save_credentials
    from edge_agent.transport.grpc import GrpcTls
    from edge_agent.transport.grpc import enroll as grpc_enroll

    server = server.removeprefix("grpc://")
    try:
        check_plaintext(split_host_port(server)[0], ca_cert, insecure)
    except EdgeError as exc:
        raise click.UsageError(str(exc)) from exc

    host = asdict(detect_host())
    facts = {
        "os": host["os"],
        "arch": host["arch"],
        "cpu_features": sorted(host["cpu_features"]),
        "runtimes": sorted(host["runtimes"]),
        "execution_providers": sorted(host["execution_providers"]),
        "agent_version": __version__,
    }
    try:
        tls = GrpcTls(ca_cert, client_cert, client_key) if ca_cert else None
        creds = grpc_enroll(server, token, device_id, facts, tls)
    except TransportError as exc:
        hint = f" (is `fleetcast serve` running at {server}?)" if "UNAVAILABLE" in str(exc) else ""
        raise click.ClickException(f"{exc}{hint}") from exc
    path = save_credentials(state_dir, creds)
    click.echo(
        json.dumps({"event": "enrolled", "device_id": creds["device_id"], "credentials": str(path)})
    )


@main.command()
@click.argument("package", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--address", required=True, help="The agent's local API: unix:PATH or HOST:PORT.")
@click.option("--timeout", default=120.0, show_default=True)
def install(package: Path, address: str, timeout: float) -> None:
    """Install a local package file through the running agent (LoadModel)."""
    import grpc

    from edge_agent.proto.fleetcast.v1 import scoring_pb2 as pb
    from edge_agent.proto.fleetcast.v1 import scoring_pb2_grpc as pb_grpc

    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.EdgeScoringStub(channel)  # type: ignore[no-untyped-call]
        try:
            desc = stub.LoadModel(
                pb.LoadModelRequest(package_path=str(package.resolve())), timeout=timeout
            )
        except grpc.RpcError as exc:
            hint = (
                f" (no agent answers at {address}: start one with "
                f"`fleetcast-agent run --listen {address}`)"
                if exc.code() == grpc.StatusCode.UNAVAILABLE
                else ""
            )
            raise click.ClickException(f"{exc.code().name}: {exc.details()}{hint}") from exc
    click.echo(
        json.dumps(
            {
                "model": desc.name,
                "package_id": desc.package_id,
                "release": desc.release,
                "slot": desc.slot,
            }
        )
    )


main.add_command(install_service)
