"""`fleetcast`: the operator's command line."""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from control_plane import __version__, cli_functions
from control_plane.api.client import ApiClient
from control_plane.cli_alert_rules import alert_rules
from control_plane.cli_api import add_api_commands, api_command, emit
from control_plane.cli_certs import certs
from control_plane.cli_fleet import duration as _duration
from control_plane.errors import ControlPlaneError
from control_plane.settings import Settings
from edge_agent.errors import EdgeError

# control_plane.transport.grpc_server.DEFAULT_WORKERS, not imported here (grpc is heavy)
DEFAULT_GRPC_WORKERS = 512

logger = logging.getLogger(__name__)


class _Errors(click.Group):
    """Turn our own errors into one clear line and a non-zero exit, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (ControlPlaneError, EdgeError) as exc:
            raise click.ClickException(str(exc)) from exc
        except OSError as exc:  # a missing, unreadable or unwritable file: name it
            raise click.ClickException(
                f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc)
            ) from exc
        except sqlite3.DatabaseError as exc:
            raise click.ClickException(f"the store in the data directory: {exc}") from exc


@click.group(cls=_Errors)
@click.version_option(__version__, prog_name="fleetcast")
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
    """Package signing keys (ed25519): generate (local), list, rotate, retire (over the API)."""


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


KEY_COLUMNS = ["key_id", "state", "rotation"]


def _key_rows(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keys for a table: the rotation as acked/failed/pending counts."""
    rows = []
    for item in items:
        rotation = item.get("rotation")
        summary = None
        if rotation:
            summary = (
                f"-> {rotation['key_id']}: {len(rotation['acked'])} acked, "
                f"{len(rotation['failed'])} failed, {len(rotation['pending'])} pending"
            )
        rows.append({**item, "rotation": summary})
    return rows


@keys.command("list")
@api_command
def keys_list(client: ApiClient, as_json: bool) -> None:
    """The signing keys (current, previous, retired) and each rotation's progress (admin)."""
    items = client.request("GET", "/api/v1/keys")["items"]
    emit(items if as_json else _key_rows(items), KEY_COLUMNS, as_json)


@keys.command("rotate")
@click.option(
    "--retire-previous", is_flag=True, help="Stop trusting the old key now, without the acks."
)
@api_command
def keys_rotate(client: ApiClient, as_json: bool, retire_previous: bool) -> None:
    """Make a new signing key and announce it to every device, signed by the old one (admin)."""
    done = client.request("POST", "/api/v1/keys/rotate", body={"retire_previous": retire_previous})
    if as_json:
        emit([done], [], True)
        return
    click.echo(
        f"signing key {done['previous_key_id']} -> {done['key_id']}: sent to "
        f"{len(done['pending']) + len(done['acked'])} device(s); follow with `fleetcast keys list`"
    )


@keys.command("retire")
@click.argument("key_id")
@click.option("--force", is_flag=True, help="Retire it although devices have not acked.")
@api_command
def keys_retire(client: ApiClient, as_json: bool, key_id: str, force: bool) -> None:
    """Stop trusting a previous key (refused, naming the devices, until all acked) (admin)."""
    done = client.request("POST", f"/api/v1/keys/{key_id}/retire", body={"force": force})
    emit(_key_rows([done]) if not as_json else [done], KEY_COLUMNS, as_json)


# ------------------------------------------------------------------ profiles


@cli.group()
def profiles() -> None:
    """Hardware profiles."""


@profiles.command("list")
@click.option(
    "--profiles-dir",
    "--dir",
    "directory",
    type=click.Path(path_type=Path),
    help="Your own profiles, on top of the built-in ones [FLEETCAST_PROFILES_DIR].",
)
@click.pass_obj
def profiles_list(settings: Settings, directory: Path | None) -> None:
    """Validate every profile and show whether this host can benchmark it."""
    from control_plane.core.hardware import builtin_profiles_dir, load_profile, profile_files
    from edge_agent.host import detect_host

    host = detect_host()
    builtin = builtin_profiles_dir()
    for path in profile_files(settings.profile_dirs(directory)).values():
        profile = load_profile(path)
        problems = profile.host_mismatches(host)
        here = "benchmarks here" if not problems else "not here: " + "; ".join(problems)
        kinds = ", ".join(c.key for c in profile.compile.candidates)
        source = "" if path.parent == builtin else f"  (from {path})"
        click.echo(f"{profile.id:22} {profile.target.arch:8} {kinds}  [{here}]{source}")


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
@click.option(
    "--profiles-dir",
    type=click.Path(path_type=Path),
    help="Your own profiles, on top of the built-in ones [FLEETCAST_PROFILES_DIR].",
)
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
@click.option(
    "--task",
    type=click.Choice(["classification", "regression", "embedding"]),
    help="what the model does, which sets the fidelity measure (default: inferred)",
)
@click.option(
    "--unknown-id",
    type=int,
    help="the tokenizer's unknown-token id: its share is watched for drift",
)
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
    unknown_id: int | None,
    author: str | None,
    as_json: bool,
) -> None:
    """Compile MODEL (.onnx, .pt2, or a state_dict with --factory) into signed packages."""
    from rich.console import Console

    from control_plane.compiler.pipeline import CompileRequest, compile_model
    from control_plane.core.hardware import select_profiles

    console = Console(stderr=True)
    selected = select_profiles(settings.profile_dirs(profiles_dir), list(profile_ids))
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
        unknown_id=unknown_id,
    )
    progress, bar = _progress_bar(console)
    try:
        outcomes = compile_model(request, progress)
    finally:
        bar.stop()
    for outcome in outcomes:
        summary = outcome.summary()
        if as_json:
            click.echo(json.dumps(summary, sort_keys=True))
        else:
            measured = _fidelity_line(outcome.fidelity)
            latency = (
                f"{summary['latency_ms']:.3f} ms"
                if summary["latency_ms"] is not None
                else "not measured"
            )
            console.print(
                f"[bold]{outcome.profile}[/]: {summary['format']}/{summary['recipe']} "
                f"{summary['size_bytes']} B, {measured}, {latency}\n"
                f"  {outcome.decision}\n  -> {summary['path']}"
            )


def _progress_bar(console: Any) -> tuple[Callable[[str], None], Any]:
    """A progress bar over the candidates (``candidate i/n: key`` messages); every
    message is also logged, so mixed-precision trials and decisions stay visible."""

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    bar = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    task = bar.add_task("compiling", total=None)
    pattern = re.compile(r"^candidate (\d+)/(\d+): (.+)$")

    def progress(message: str) -> None:
        if not bar.live.is_started:
            bar.start()
        match = pattern.match(message)
        if match:
            done, total = int(match.group(1)) - 1, int(match.group(2))
            bar.update(task, completed=done, total=total, description=match.group(3))
        elif message.startswith(("choosing for", "wrote")):
            bar.update(task, completed=bar.tasks[0].total or 0, description=message)
        else:
            bar.update(task, description=message.strip()[:60])
        console.log(message)

    return progress, bar


def _fidelity_line(fid: Any) -> str:
    """The task's own measure, as the report judged it."""
    if fid is None:
        return "fidelity -"
    parts = [
        f"{label} {value:.4f}"
        for label, value in (
            ("top-1 agreement", fid.top1_agreement),
            ("relative error", fid.relative_error),
            ("mean cosine", fid.mean_cosine),
            ("p1 cosine", fid.p1_cosine),
            ("NN agreement", fid.nn_agreement),
        )
        if value is not None
    ]
    if fid.float_nodes:
        parts.append(f"{len(fid.float_nodes)} node(s) kept in float")
    return f"{fid.task or 'fidelity'}: " + ", ".join(parts or ["-"])


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


# ------------------------------------------------------------------ serve, store (local)


def _services(settings: Settings, store: str | None) -> Any:
    """The services over the data dir's store (or ``--store``): bootstrap commands only."""
    import dataclasses

    from control_plane.app import build_services

    if store:
        settings = dataclasses.replace(settings, store=store)
    return build_services(settings)


def _store_option(command: Any) -> Any:
    return click.option(
        "--store",
        envvar="FLEETCAST_STORE",
        help="postgresql://… or a SQLite path (default: <data dir>/store.db).",
    )(command)


@cli.command()
@click.option("--grpc", "grpc_address", default="127.0.0.1:50051", show_default=True)
@click.option(
    "--mqtt/--no-mqtt", default=False, help="Also serve MQTT through an embedded mosquitto."
)
@click.option(
    "--mqtt-port", default=1883, show_default=True, help="Embedded broker's port (0: any)."
)
@click.option(
    "--mqtt-bind", default="127.0.0.1", show_default=True, help="Embedded broker's address."
)
@click.option(
    "--mqtt-broker", help="host:port of a broker the fleet already runs (instead of embedded)"
)
@click.option("--mqtt-username", envvar="FLEETCAST_MQTT_USERNAME")
@click.option("--mqtt-password", envvar="FLEETCAST_MQTT_PASSWORD")
@click.option(
    "--mqtt-ca",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="CA (PEM) to verify the external broker's TLS certificate (turns TLS on).",
)
@click.option(
    "--mqtt-tls", is_flag=True, help="TLS to the external broker, verified with the system's CAs."
)
@click.option(
    "--tls-cert",
    type=click.Path(path_type=Path, exists=True),
    help="Server certificate (PEM) for gRPC and the embedded broker (`fleetcast certs init`).",
)
@click.option("--tls-key", type=click.Path(path_type=Path, exists=True))
@click.option(
    "--tls-ca",
    type=click.Path(path_type=Path, exists=True),
    help="The CA that signed --tls-cert (the embedded broker's cafile).",
)
@click.option(
    "--tls-client-ca", type=click.Path(path_type=Path, exists=True), help="require client certs"
)
@click.option(
    "--insecure",
    is_flag=True,
    help="Allow plaintext on a non-loopback address (tokens and credentials in clear).",
)
@click.option(
    "--http",
    "http_address",
    default="127.0.0.1:8080",
    show_default=True,
    help="HOST:PORT of the REST API (/api/v1, waitress); 'off' to serve none.",
)
@click.option(
    "--alert-interval",
    default="60s",
    show_default=True,
    callback=lambda c, p, v: _duration(v),
    help="How often the alert rules are evaluated (0: never).",
)
@click.option("--alert-webhook", multiple=True, help="http(s) URL alerts are POSTed to (repeat).")
@click.option("--alert-email", multiple=True, help="Address alerts are mailed to (repeat).")
@click.option("--smtp", "smtp_address", help="HOST:PORT of the SMTP server for --alert-email.")
@click.option("--smtp-from", default="fleetcast@localhost", show_default=True)
@click.option("--smtp-starttls", is_flag=True, help="STARTTLS before sending.")
@click.option("--smtp-user", envvar="FLEETCAST_SMTP_USER")
@click.option("--smtp-password", envvar="FLEETCAST_SMTP_PASSWORD")
@click.option(
    "--openlineage-url",
    help="OpenLineage HTTP endpoint's base URL (e.g. Marquez, http://host:5000): the run"
    " events of compiles, rollouts and drift evaluations are POSTed to its /api/v1/lineage.",
)
@click.option(
    "--openlineage-interval",
    default="5m",
    show_default=True,
    callback=lambda c, p, v: _duration(v),
    help="How often what changed in the lineage is pushed to --openlineage-url.",
)
@click.option(
    "--retention-full",
    default="2d",
    show_default=True,
    callback=lambda c, p, v: _duration(v),
    help="Telemetry windows younger than this are kept as uploaded.",
)
@click.option(
    "--retention-bucket",
    default="1h",
    show_default=True,
    callback=lambda c, p, v: _duration(v),
    help="Older windows are merged per this bucket.",
)
@click.option(
    "--retention-keep",
    default="90d",
    show_default=True,
    callback=lambda c, p, v: _duration(v),
    help="Merged telemetry older than this is deleted (0: kept).",
)
@click.option(
    "--retention-uploads",
    default="7d",
    show_default=True,
    callback=lambda c, p, v: _duration(v),
    help="Raw uploads received longer ago are pruned; a resend is still a duplicate (0: kept).",
)
@click.option(
    "--retention-captures",
    default="30d",
    show_default=True,
    callback=lambda c, p, v: _duration(v),
    help="Captured predictions (sealed samples) older than this are pruned, with their"
    " explanations and labels (0: kept).",
)
@click.option(
    "--retention-interval",
    default="10m",
    show_default=True,
    callback=lambda c, p, v: _duration(v),
    help="How often retention runs (0: never).",
)
@click.option(
    "--grpc-workers",
    type=click.IntRange(min=8),
    default=DEFAULT_GRPC_WORKERS,
    show_default=True,
    envvar="FLEETCAST_GRPC_WORKERS",
    help="gRPC worker threads: each connected gRPC agent holds one (its command stream); "
    "a quarter stay for enrollment and uploads. Raise it for fleets above ~380 gRPC agents.",
)
@_store_option
@click.pass_obj
def serve(
    settings: Settings,
    grpc_address: str,
    mqtt: bool,
    mqtt_port: int,
    mqtt_bind: str,
    mqtt_broker: str | None,
    mqtt_username: str | None,
    mqtt_password: str | None,
    mqtt_ca: Path | None,
    mqtt_tls: bool,
    tls_cert: Path | None,
    tls_key: Path | None,
    tls_ca: Path | None,
    tls_client_ca: Path | None,
    insecure: bool,
    http_address: str,
    alert_interval: float,
    alert_webhook: tuple[str, ...],
    alert_email: tuple[str, ...],
    smtp_address: str | None,
    smtp_from: str,
    smtp_starttls: bool,
    smtp_user: str | None,
    smtp_password: str | None,
    openlineage_url: str | None,
    openlineage_interval: float,
    retention_full: float,
    retention_bucket: float,
    retention_keep: float,
    retention_uploads: float,
    retention_captures: float,
    retention_interval: float,
    grpc_workers: int,
    store: str | None,
) -> None:
    """Serve agents (gRPC; MQTT with --mqtt or --mqtt-broker) and operators (REST, --http).

    Off this host, TLS is required (--tls-cert/--tls-key; --mqtt-ca for an
    external broker) unless --insecure is given.
    """
    import signal
    import threading

    from control_plane.server import ControlPlane, ServeOptions
    from control_plane.services.alerts import Notifications, SmtpConfig
    from control_plane.services.retention import RetentionPolicy
    from control_plane.transport.broker import BrokerTls
    from control_plane.transport.grpc_server import TlsConfig
    from control_plane.transport.mqtt import MqttEndpoint

    external = None
    if mqtt_broker:
        host, _, port = mqtt_broker.rpartition(":")
        if not host or not port.isdigit() or not mqtt_username or not mqtt_password:
            raise click.UsageError("--mqtt-broker HOST:PORT needs --mqtt-username/--mqtt-password")
        external = MqttEndpoint(
            host,
            int(port),
            mqtt_username,
            mqtt_password,
            tls=mqtt_tls or mqtt_ca is not None,
            ca_cert=str(mqtt_ca) if mqtt_ca else None,
        )
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    if mqtt and external is None and tls_cert and not (tls_ca or tls_client_ca):
        raise click.UsageError("--mqtt with --tls-cert needs --tls-ca (the CA that signed it)")
    tls = TlsConfig(tls_cert, tls_key, tls_client_ca) if tls_cert and tls_key else None
    broker_tls = (
        BrokerTls(tls_cert, tls_key, tls_client_ca or tls_ca, tls_client_ca is not None)
        if tls_cert and tls_key
        else None
    )
    smtp = None
    if smtp_address:
        smtp_host, _, smtp_port = smtp_address.rpartition(":")
        if not smtp_host or not smtp_port.isdigit():
            raise click.BadParameter(f"{smtp_address!r}: expected HOST:PORT", param_hint="--smtp")
        smtp = SmtpConfig(
            smtp_host, int(smtp_port), smtp_from, smtp_starttls, smtp_user, smtp_password
        )
    try:
        notifications = Notifications(tuple(alert_webhook), tuple(alert_email), smtp)
        retention = RetentionPolicy(
            retention_full,
            retention_bucket,
            retention_keep,
            retention_interval,
            uploads_s=retention_uploads,
            captures_s=retention_captures,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    plane = ControlPlane(
        ServeOptions(
            alert_interval_s=alert_interval,
            alert_notifications=notifications,
            retention=retention,
            openlineage_url=openlineage_url,
            openlineage_interval_s=openlineage_interval,
            data_dir=settings.data_dir,
            grpc_address=grpc_address,
            grpc_tls=tls,
            mqtt=mqtt or external is not None,
            mqtt_host=mqtt_bind,
            mqtt_port=mqtt_port,
            mqtt_tls=broker_tls if external is None else None,
            mqtt_external=external,
            insecure=insecure,
            store=store or settings.store,
            http_address=None if http_address == "off" else http_address,
            grpc_workers=grpc_workers,
        )
    )
    try:
        plane.start()
    except BaseException:
        plane.stop()
        raise
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    click.echo(
        f"serving gRPC on port {plane.grpc_port}"
        + (f", MQTT on port {plane.mqtt_port}" if plane.mqtt_port else "")
        + (f", HTTP on port {plane.http_port}" if plane.http_port else "")
        + f"; data in {settings.data_dir}",
        err=True,
    )
    stop.wait()
    plane.stop()


@cli.group()
def store() -> None:
    """The control plane's store."""


@store.command("import-old")
@click.argument("path", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@_store_option
@click.pass_obj
def store_import_old(settings: Settings, path: Path, store: str | None) -> None:
    """Import an old fleetcast.db (before the repositories) into a new, empty store."""
    import time

    from control_plane.legacy_store import import_old_store

    services = _services(settings, store)
    try:
        report = import_old_store(path, services.repos, time.time())
    finally:
        services.close()
    counts = ", ".join(f"{n} {what}" for what, n in sorted(report.counts.items())) or "nothing"
    click.echo(f"imported {counts} from {path}")
    for line in report.skipped:
        click.echo(f"skipped {line}", err=True)


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


cli.add_command(certs)
add_api_commands(cli)
cli_functions.register(cli)
cli.add_command(alert_rules)
