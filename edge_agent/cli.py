"""``fleetcast-agent``: run the device daemon, or hand it a local package to install."""

from __future__ import annotations

import json
import logging
import signal
import threading
from pathlib import Path
from types import FrameType

import click

from edge_agent.settings import Settings, SettingsError

logger = logging.getLogger(__name__)


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log at DEBUG level.")
def main(verbose: bool) -> None:
    """Fleetcast edge agent."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@main.command()
@click.option("--state-dir", type=click.Path(path_type=Path), help="[FLEETCAST_AGENT_STATE_DIR]")
@click.option("--public-key", type=click.Path(path_type=Path), help="Trusted package key (PEM).")
@click.option("--device-id", help="This device's id [FLEETCAST_AGENT_DEVICE_ID].")
@click.option("--listen", help="Local API: unix:PATH or 127.0.0.1:PORT.")
def run(
    state_dir: Path | None, public_key: Path | None, device_id: str | None, listen: str | None
) -> None:
    """Recover the state directory, serve the installed models, and stay up until SIGTERM."""
    from edge_agent.agent import Agent
    from edge_agent.local_api import serve

    try:
        settings = Settings.from_env(
            state_dir=state_dir, public_key=public_key, device_id=device_id, listen=listen
        )
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from exc
    agent = Agent(settings)
    agent.start()
    server, bound = serve(agent, settings.listen_address)
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    # one line on stdout that supervisors and tests can wait for
    click.echo(
        json.dumps({"event": "serving", "address": bound, "models": sorted(agent.models)}), nl=True
    )
    stop.wait()
    logger.info("stopping")
    server.stop(grace=5).wait()
    agent.close()


@main.command()
@click.argument("package", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--address", required=True, help="The agent's local API: unix:PATH or HOST:PORT.")
@click.option("--timeout", default=120.0, show_default=True)
def install(package: Path, address: str, timeout: float) -> None:
    """Install a local package file through the running agent (LoadModel)."""
    import grpc

    from protos.fleetcast.v1 import scoring_pb2 as pb
    from protos.fleetcast.v1 import scoring_pb2_grpc as pb_grpc

    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.EdgeScoringStub(channel)  # type: ignore[no-untyped-call]
        try:
            desc = stub.LoadModel(
                pb.LoadModelRequest(package_path=str(package.resolve())), timeout=timeout
            )
        except grpc.RpcError as exc:
            raise click.ClickException(f"{exc.code().name}: {exc.details()}") from exc
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
