"""`fleetcast function build` and `fleetcast batch score` (registered by control_plane.cli)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

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


def catalog_package(
    client: Any, model: str, version: str, profile: str | None, cache: Path
) -> Path:
    """The package of ``model`` ``version`` (for ``profile``, or the only one) from the
    catalog over the API, downloaded into ``cache`` once and checked against its sha256."""
    import hashlib

    from control_plane.errors import InvalidInput, NotFound

    found = list(
        client.pages("/api/v1/packages", {"model": model, "version": version, "profile": profile})
    )
    if not found:
        raise NotFound(
            f"{model} {version} has no package"
            + (f" for profile {profile}" if profile else "")
            + " in the catalog"
        )
    if len(found) > 1:
        profiles = sorted(p["profile_id"] for p in found)
        raise InvalidInput(f"{model} {version} has packages for {profiles}: pass --profile")
    sha = str(found[0]["sha256"])
    target = cache / f"{sha}.fcpkg"
    if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == sha:
        return target
    data = client.download(f"/api/v1/packages/{sha}/file")
    got = hashlib.sha256(data).hexdigest()
    if got != sha:
        raise InvalidInput(f"package {sha} arrived with sha256 {got}: refusing it")
    cache.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)
    return target


def _api_client(api: str | None) -> Any:
    from control_plane.api.client import DEFAULT_SERVER, ApiClient, config_path, read_config

    saved = read_config(config_path())
    url = api or saved.get("server") or DEFAULT_SERVER
    return ApiClient(url, os.environ.get("FLEETCAST_TOKEN") or saved.get("token"))


@batch.command("score")
@click.option("--package", type=_FILE, help="The signed .fcpkg to score with.")
@click.option("--model", help="With --version: the catalog's package of that version.")
@click.option(
    "--version", "version", help="A catalog version (with --model), fetched over the API."
)
@click.option("--profile", help="With --version: the package built for this profile.")
@click.option(
    "--api",
    envvar="FLEETCAST_API_URL",
    help="The control plane's REST API for --version (default: the `fleetcast login` server).",
)
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
    package: Path | None,
    model: str | None,
    version: str | None,
    profile: str | None,
    api: str | None,
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
    or, without one, to OUTPUT.telemetry.jsonl. Give --package FILE, or --model and
    --version to score with the catalog's package (downloaded over --api with
    FLEETCAST_TOKEN, verified with the public key like any package).
    """
    if (package is None) == (version is None):
        raise click.UsageError("give exactly one of --package FILE or --version V (with --model)")
    if version is not None:
        if not model:
            raise click.UsageError("--version needs --model")
        package = catalog_package(
            _api_client(api), model, version, profile, settings.data_dir / "package-cache"
        )
    assert package is not None
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
