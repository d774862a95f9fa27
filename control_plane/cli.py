"""`fleetcast`: the operator's command line."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from control_plane.errors import ControlPlaneError
from control_plane.settings import Settings
from edge_agent.errors import EdgeError

logger = logging.getLogger(__name__)


class _Errors(click.Group):
    """Turn our own errors into one clear line and a non-zero exit, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (ControlPlaneError, EdgeError) as exc:
            raise click.ClickException(str(exc)) from exc


@click.group(cls=_Errors)
@click.option("-v", "--verbose", is_flag=True, help="Log debug details to stderr.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """Fleetcast: compile, sign and ship models to edge fleets and functions."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, stream=sys.stderr)
    if not verbose:  # the compile tool chain warns about GPU kernels a CPU host never loads
        for noisy in ("torchao", "jax", "absl"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
    ctx.obj = ctx.obj or Settings.from_env()


# ------------------------------------------------------------------ keys


@cli.group()
def keys() -> None:
    """Package signing keys (ed25519)."""


@keys.command("generate")
@click.option(
    "--dir", "directory", type=click.Path(path_type=Path), help="Where to write the pair."
)
@click.option("--force", is_flag=True, help="Replace an existing key pair.")
@click.pass_obj
def keys_generate(settings: Settings, directory: Path | None, force: bool) -> None:
    """Generate a signing key pair: fleetcast.key (private, 0600) and fleetcast.pub."""
    from control_plane.signing import generate_keypair

    private, public = generate_keypair(directory or settings.key_dir, overwrite=force)
    click.echo(f"private key: {private}\npublic key:  {public}")


# ------------------------------------------------------------------ profiles


@cli.group()
def profiles() -> None:
    """Hardware profiles."""


@profiles.command("list")
@click.option("--dir", "directory", type=click.Path(path_type=Path))
@click.pass_obj
def profiles_list(settings: Settings, directory: Path | None) -> None:
    """Validate every profile and show whether this host can benchmark it."""
    from control_plane.core.hardware import load_profiles
    from edge_agent.host import detect_host

    host = detect_host()
    for profile in load_profiles(directory or settings.profiles_dir).values():
        problems = profile.host_mismatches(host)
        here = "benchmarks here" if not problems else "not here: " + "; ".join(problems)
        kinds = ", ".join(c.key for c in profile.compile.candidates)
        click.echo(f"{profile.id:22} {profile.target.arch:8} {kinds}  [{here}]")


# ------------------------------------------------------------------ compile


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "--calibration",
    required=True,
    type=click.Path(path_type=Path),
    help=".npz, one array per input",
)
@click.option("--validation", required=True, type=click.Path(path_type=Path), help="held-out .npz")
@click.option(
    "--reference",
    type=click.Path(path_type=Path),
    help=".npz for reference statistics (default: calibration)",
)
@click.option(
    "--labels", type=click.Path(path_type=Path), help=".npz/.npy labels of the validation rows"
)
@click.option("--factory", help="module:function building the nn.Module when MODEL is a state_dict")
@click.option(
    "-p", "--profile", "profile_ids", multiple=True, help="profile id (repeat; default: all)"
)
@click.option("--profiles-dir", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", type=click.Path(path_type=Path), help="output directory")
@click.option("--key", "key_path", type=click.Path(path_type=Path), help="signing key (PEM)")
@click.option("--name", "model_name", required=True, help="model name")
@click.option("--version", "model_version", default="1", show_default=True)
@click.option(
    "--release",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="anti-rollback release number",
)
@click.option("--task", type=click.Choice(["classification", "regression"]))
@click.option("--author", help="recorded in lineage (default: the OS user)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object per package")
@click.pass_obj
def compile(  # noqa: A001 - the command's name
    settings: Settings,
    model: Path,
    calibration: Path,
    validation: Path,
    reference: Path | None,
    labels: Path | None,
    factory: str | None,
    profile_ids: tuple[str, ...],
    profiles_dir: Path | None,
    out_dir: Path | None,
    key_path: Path | None,
    model_name: str,
    model_version: str,
    release: int,
    task: str | None,
    author: str | None,
    as_json: bool,
) -> None:
    """Compile MODEL (.onnx, .pt2, or a state_dict with --factory) into signed packages."""
    from rich.console import Console

    from control_plane.compiler.pipeline import CompileRequest, compile_model
    from control_plane.core.hardware import select_profiles

    console = Console(stderr=True)
    selected = select_profiles(profiles_dir or settings.profiles_dir, list(profile_ids))
    request = CompileRequest(
        model=model,
        calibration=calibration,
        validation=validation,
        reference=reference,
        labels=labels,
        factory=factory,
        profiles=selected,
        out_dir=out_dir or settings.package_dir,
        signing_key=key_path or settings.key_dir / "fleetcast.key",
        model_name=model_name,
        model_version=model_version,
        release=release,
        task=task,  # type: ignore[arg-type]
        created_by=author,
    )
    with console.status("compiling") as status:

        def progress(message: str) -> None:
            status.update(message)
            console.log(message)

        outcomes = compile_model(request, progress)
    for outcome in outcomes:
        summary = outcome.summary()
        if as_json:
            click.echo(json.dumps(summary, sort_keys=True))
        else:
            fid = outcome.fidelity
            agree = f"{fid.top1_agreement:.4f}" if fid and fid.top1_agreement is not None else "-"
            latency = (
                f"{summary['latency_ms']:.3f} ms"
                if summary["latency_ms"] is not None
                else "not measured"
            )
            console.print(
                f"[bold]{outcome.profile}[/]: {summary['format']}/{summary['recipe']} "
                f"{summary['size_bytes']} B, top-1 agreement {agree}, {latency}\n"
                f"  {outcome.decision}\n  -> {summary['path']}"
            )


# ------------------------------------------------------------------ inspect / verify


@cli.command()
@click.argument("package", type=click.Path(path_type=Path, exists=True, dir_okay=False))
def inspect(package: Path) -> None:
    """Print a package's manifest as JSON (format checks only; use verify to trust it)."""
    from edge_agent.package import read_package

    manifest, _, _ = read_package(package.read_bytes())
    click.echo(json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=True))


@cli.command()
@click.argument("package", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option(
    "--public-key", required=True, type=click.Path(path_type=Path, exists=True, dir_okay=False)
)
@click.option("--sha256", "expected", help="expected sha256 of the package file")
@click.option("--this-host", is_flag=True, help="also check the profile against this host")
def verify(package: Path, public_key: Path, expected: str | None, this_host: bool) -> None:
    """Check a package's format, hashes and signature; exit non-zero naming what failed."""
    from edge_agent.host import detect_host
    from edge_agent.package import load_public_key, open_package

    checked = open_package(
        package,
        load_public_key(public_key),
        host=detect_host() if this_host else None,
        expected_sha256=expected,
    )
    m = checked.manifest
    click.echo(f"ok: {m.package_id} sha256 {checked.sha256} signed by key {m.key_id}")


# ------------------------------------------------------------------ demo


@cli.command()
@click.option("--workdir", type=click.Path(path_type=Path), help="default: <data dir>/demo")
@click.pass_obj
def demo(settings: Settings, workdir: Path | None) -> None:
    """Train digits models, compile them for every profile, verify and score on-device."""
    from control_plane.demo import run_demo

    run_demo(settings, workdir or settings.data_dir / "demo")


def main() -> None:
    cli(prog_name="fleetcast")
