"""`fleetcast function build` and `fleetcast batch score` (registered by control_plane.cli)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from control_plane.settings import Settings

_FILE = click.Path(path_type=Path, exists=True, dir_okay=False)


def _public_key(settings: Settings, given: Path | None) -> Path:
    from control_plane.signing import PUBLIC_NAME

    key = given or settings.key_dir / PUBLIC_NAME
    if not key.is_file():
        raise click.ClickException(f"public key {key} not found: pass --public-key")
    return key


@click.group()
def batch() -> None:
    """Batch scoring of files with a signed package (locally or on Dask)."""


@batch.command("score")
@click.option("--package", required=True, type=_FILE, help="The signed .fcpkg to score with.")
@click.option("--public-key", type=_FILE, help="Default: the key directory's fleetcast.pub.")
@click.option(
    "--input",
    "source",
    required=True,
    type=click.Path(path_type=Path, exists=True),
    help="A CSV, Parquet or npz file, or a directory of them.",
)
@click.option(
    "--output",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Predictions file (.csv, or .parquet); bad rows and telemetry go beside it.",
)
@click.option("--chunk-rows", default=4096, show_default=True, help="Rows per chunk.")
@click.option("--fail-fast", is_flag=True, help="Stop at the first malformed row.")
@click.option("--dask", help="local:N (a local cluster of N workers) or tcp://scheduler:8786.")
@click.option("--server", help="grpc://HOST:PORT: send telemetry windows to the control plane.")
@click.option("--device-id", default="batch", show_default=True, help="The enrolled identity.")
@click.option("--job-id", help="Prefix of the prediction ids (default: from package and input).")
@click.pass_obj
def batch_score(
    settings: Settings,
    package: Path,
    public_key: Path | None,
    source: Path,
    output: Path,
    chunk_rows: int,
    fail_fast: bool,
    dask: str | None,
    server: str | None,
    device_id: str,
    job_id: str | None,
) -> None:
    """Score every row of INPUT; a malformed row is reported (file, row) and the job goes on.

    Telemetry windows go to --server (device token in FLEETCAST_DEVICE_TOKEN),
    or, without one, to OUTPUT.telemetry.jsonl.
    """
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from edge_agent.outbox import Outbox
    from edge_agent.reporting import Reporter
    from functions.batch.job import BadRowError, BatchJob, run_batch
    from functions.batch.readers import BatchInputError
    from functions.telemetry import GrpcUploader, instance_sequence

    reporter = None
    if server:
        token = os.environ.get("FLEETCAST_DEVICE_TOKEN", "")
        if not token:
            raise click.ClickException("--server needs FLEETCAST_DEVICE_TOKEN (the device token)")
        state = output.with_name(output.name + ".telemetry")
        state.mkdir(parents=True, exist_ok=True)
        outbox = Outbox(state / "outbox.sqlite")
        reporter = Reporter(
            outbox,
            GrpcUploader(server, token),
            device_id,
            sequence=instance_sequence(outbox, state),
        )
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}", markup=False),
        TimeElapsedColumn(),
        transient=True,
    ) as progress:
        task = progress.add_task("scoring", total=None)

        def show(rows: int, bad: int, file: str) -> None:
            progress.update(task, description=f"{rows} rows scored, {bad} bad ({Path(file).name})")

        job = BatchJob(
            package,
            _public_key(settings, public_key),
            source,
            output,
            chunk_rows=chunk_rows,
            fail_fast=fail_fast,
            dask=dask,
            job_id=job_id,
            device_id=device_id,
            reporter=reporter,
            progress=show,
        )
        try:
            summary = run_batch(job)
        except (BadRowError, BatchInputError) as exc:
            raise click.ClickException(str(exc)) from exc
    if reporter is not None and reporter.pending():
        click.echo(f"{reporter.pending()} windows wait in {reporter.outbox.path}", err=True)
    if summary.bad_rows:
        click.echo(f"{summary.bad_rows} malformed rows: see {summary.errors}", err=True)
    click.echo(json.dumps({k: v for k, v in vars(summary).items() if k != "extra"}))


@click.group()
def function() -> None:
    """Serverless handlers: build deployable artifacts."""


@function.command("build")
@click.option("--package", required=True, type=_FILE, help="The signed .fcpkg to ship.")
@click.option("--public-key", type=_FILE, help="Default: the key directory's fleetcast.pub.")
@click.option(
    "--target",
    required=True,
    type=click.Choice(["aws-lambda-x86_64", "aws-lambda-arm64", "gcf", "knative", "openfaas"]),
)
@click.option("--output", required=True, type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "--python-version",
    default="3.11",
    show_default=True,
    type=click.Choice(["3.11", "3.12", "3.13"]),
    help="Lambda runtime: 3.11 is Amazon Linux 2 (manylinux2014), 3.12+ AL2023.",
)
@click.pass_obj
def function_build(
    settings: Settings,
    package: Path,
    public_key: Path | None,
    target: str,
    output: Path,
    python_version: str,
) -> None:
    """A Lambda zip (dependencies for the target platform, <= 250 MB unzipped) or a
    container build context (Dockerfile + handler + package) for the other targets."""
    from functions.build import BuildError, build

    try:
        result = build(
            package,
            _public_key(settings, public_key),
            target,
            output,
            python_version=python_version,
        )
    except BuildError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        json.dumps(
            {
                "target": result.target,
                "path": str(result.path),
                "unzipped_bytes": result.unzipped_bytes,
                "package_sha256": result.package_sha256,
            }
        )
    )


def register(cli: click.Group) -> None:
    cli.add_command(batch)
    cli.add_command(function)
