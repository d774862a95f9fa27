"""``fleetcast jobs|packages|audit|tokens|whoami|login|admin …``: the CLI as an API client.

The fleet commands (``devices``, ``deploy``) are in ``cli_fleet.py``.

Every command takes ``--server URL`` (or ``FLEETCAST_SERVER``) and ``--json``
(one JSON object per line instead of a table); the token is ``FLEETCAST_TOKEN``
or the one ``fleetcast login`` saved. ``fleetcast admin init`` is the only one
that opens the store itself: it makes the first admin token. Catalog commands
(``models``, ``versions``) are in ``cli_catalog.py``; monitoring (``monitor``) in
``cli_monitor.py``.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from control_plane.api.client import (
    DEFAULT_SERVER,
    ApiClient,
    config_path,
    read_config,
    write_config,
)
from control_plane.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])
FINAL = ("succeeded", "failed", "cancelled")


def api_command(func: F) -> F:
    """Add ``--server`` and ``--json``; pass an :class:`ApiClient` and ``as_json``."""

    @click.option("--server", envvar="FLEETCAST_SERVER", help=f"API URL (default {DEFAULT_SERVER})")
    @click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
    @functools.wraps(func)
    def wrapper(*args: Any, server: str | None, as_json: bool, **kwargs: Any) -> Any:
        saved = read_config(config_path())
        client = ApiClient(
            server or saved.get("server") or DEFAULT_SERVER,
            os.environ.get("FLEETCAST_TOKEN") or saved.get("token"),
        )
        return func(*args, client=client, as_json=as_json, **kwargs)

    return wrapper  # type: ignore[return-value]


def emit(rows: Iterable[dict[str, Any]], columns: Sequence[str], as_json: bool) -> None:
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, sort_keys=True))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(*columns)
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in columns))
    Console().print(table)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value > 1e9:  # a time
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(value))
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


# ------------------------------------------------------------------ bootstrap, login


@click.group()
def admin() -> None:
    """Bootstrap commands run on the control plane's host (they open the store)."""


@admin.command("init")
@click.option("--name", default="admin", show_default=True, help="The token's name.")
@click.option("--store", envvar="FLEETCAST_STORE", help="default: <data dir>/store.db")
@click.option("--force", is_flag=True, help="Add another admin token even if one exists.")
@click.option("--save", is_flag=True, help="Also save it as this user's CLI login.")
@click.option("--server", envvar="FLEETCAST_SERVER", help="The server to save with --save.")
@click.option("--json", "as_json", is_flag=True, help="Print {id, name, role, token} as JSON.")
@click.pass_obj
def admin_init(
    settings: Settings,
    name: str,
    store: str | None,
    force: bool,
    save: bool,
    server: str | None,
    as_json: bool,
) -> None:
    """Make the first admin token and print it (shown once); make the sample key (0600)."""
    from control_plane.app import sample_keyring
    from control_plane.services.tokens import bootstrap_admin
    from control_plane.store.factory import open_repositories

    url = store or settings.store_url
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    keys = sample_keyring(settings)  # captured samples are sealed with it (docs/security.md)
    repos = open_repositories(url, sample_keys=keys)
    try:
        token, secret = bootstrap_admin(repos, name, force=force)
    finally:
        repos.close()
    if save:
        write_config(config_path(), server or DEFAULT_SERVER, secret)
        click.echo(f"saved to {config_path()}", err=True)
    if as_json:
        view = {"id": token.id, "name": token.name, "role": token.role, "token": secret}
        click.echo(json.dumps(view, sort_keys=True))
        return
    click.echo(secret)
    click.echo(
        f"admin token {token.name!r} ({token.id}): store it now, it is not shown again", err=True
    )


@admin.command("rotate-sample-key")
@click.pass_obj
def admin_rotate_sample_key(settings: Settings) -> None:
    """Retire the captured-sample key to keys/samples.d and make a new one (restart serve)."""
    from control_plane.crypto import rotate_sample_key

    old, new = rotate_sample_key(settings.key_dir)
    click.echo(f"sample key {old} -> {new}; restart `fleetcast serve` to seal with the new key")


@click.command()
@click.option("--server", envvar="FLEETCAST_SERVER", default=DEFAULT_SERVER, show_default=True)
@click.option("--token", prompt=True, hide_input=True, help="An API token (fct_…).")
def login(server: str, token: str) -> None:
    """Check a token against the server and save both for later commands (mode 0600)."""
    me = ApiClient(server, token).request("GET", "/api/v1/whoami")
    write_config(config_path(), server, token)
    click.echo(f"logged in to {server} as {me['name']} ({me['role']})")


@click.command()
@api_command
def whoami(client: ApiClient, as_json: bool) -> None:
    """The token's name and role."""
    emit([client.request("GET", "/api/v1/whoami")], ["name", "role"], as_json)


# ------------------------------------------------------------------ jobs, packages


JOB_COLUMNS = ["id", "model", "version", "state", "progress", "profiles", "error"]


def follow_job(client: ApiClient, job_id: str, *, quiet: bool = False, poll: float = 0.5) -> Any:
    """Poll a job until it ends, drawing its progress and new log lines."""
    from rich.console import Console
    from rich.progress import Progress

    seen = 0
    with Progress(console=Console(stderr=True, log_path=False), disable=quiet) as bar:
        task = bar.add_task(f"compile {job_id[:8]}", total=1.0)
        while True:
            job = client.request("GET", f"/api/v1/compile-jobs/{job_id}")
            for line in job["log"][seen:].splitlines():
                if line.strip() and not quiet:
                    bar.console.log(line)
            seen = len(job["log"])
            bar.update(task, completed=job["progress"], description=job["state"])
            if job["state"] in FINAL:
                return job
            time.sleep(poll)


@click.group()
def jobs() -> None:
    """Compile jobs run by the server."""


@jobs.command("list")
@click.option("--state")
@click.option("--model")
@api_command
def jobs_list(client: ApiClient, as_json: bool, state: str | None, model: str | None) -> None:
    """Compile jobs, newest first."""
    emit(
        client.pages("/api/v1/compile-jobs", {"state": state, "model": model}), JOB_COLUMNS, as_json
    )


@jobs.command("show")
@click.argument("job_id")
@click.option("--follow", is_flag=True, help="Follow it with a progress bar until it ends.")
@api_command
def jobs_show(client: ApiClient, as_json: bool, job_id: str, follow: bool) -> None:
    """One job (its log and report with --json)."""
    job = (
        follow_job(client, job_id, quiet=as_json)
        if follow
        else client.request("GET", f"/api/v1/compile-jobs/{job_id}")
    )
    emit([job], JOB_COLUMNS, as_json)


@jobs.command("cancel")
@click.argument("job_id")
@api_command
def jobs_cancel(client: ApiClient, as_json: bool, job_id: str) -> None:
    """Cancel a queued or running job."""
    emit([client.request("POST", f"/api/v1/compile-jobs/{job_id}/cancel")], JOB_COLUMNS, as_json)


@click.group()
def packages() -> None:
    """Signed packages in the catalog."""


PACKAGE_COLUMNS = [
    "package_id",
    "model_name",
    "model_version",
    "profile_id",
    "size_bytes",
    "sha256",
]


@packages.command("list")
@click.option("--model")
@click.option("--version")
@click.option("--profile")
@api_command
def packages_list(
    client: ApiClient, as_json: bool, model: str | None, version: str | None, profile: str | None
) -> None:
    """Packages (filter by model, version, profile)."""
    query = {"model": model, "version": version, "profile": profile}
    emit(client.pages("/api/v1/packages", query), PACKAGE_COLUMNS, as_json)


@packages.command("add")
@click.argument("package", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@api_command
def packages_add(client: ApiClient, as_json: bool, package: Path) -> None:
    """Upload a signed .fcpkg to the catalog (verified there; its version must be registered)."""
    added = client.request("POST", "/api/v1/packages", data=package.read_bytes())
    emit([added], PACKAGE_COLUMNS, as_json)


@packages.command("show")
@click.argument("sha256")
@api_command
def packages_show(client: ApiClient, as_json: bool, sha256: str) -> None:
    """One package (its manifest with --json)."""
    found = client.request("GET", f"/api/v1/packages/{sha256}")
    emit([found], [*PACKAGE_COLUMNS, "release", "created_at"], as_json)


# ------------------------------------------------------------------ audit, tokens


@click.command()
@click.option("--actor")
@click.option("--action")
@click.option("--subject")
@click.option("--since", type=float, help="epoch seconds")
@click.option("--until", type=float, help="epoch seconds")
@click.option("--limit", default=50, show_default=True)
@api_command
def audit(
    client: ApiClient,
    as_json: bool,
    actor: str | None,
    action: str | None,
    subject: str | None,
    since: float | None,
    until: float | None,
    limit: int,
) -> None:
    """The audit log, newest first."""
    query = {
        "actor": actor, "action": action, "subject": subject, "since": since, "until": until,
        "limit": limit,
    }  # fmt: skip
    items = client.request("GET", "/api/v1/audit", query=query)["items"]
    emit(items, ["at", "actor", "action", "subject", "before", "after"], as_json)


@click.group()
def tokens() -> None:
    """API tokens (admin)."""


TOKEN_COLUMNS = ["id", "name", "role", "created_by", "expires_at", "revoked_at", "last_used_at"]


@tokens.command("list")
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked tokens.")
@api_command
def tokens_list(client: ApiClient, as_json: bool, include_revoked: bool) -> None:
    """API tokens (never their secrets)."""
    query = {"include_revoked": "true" if include_revoked else None}
    emit(client.pages("/api/v1/tokens", query), TOKEN_COLUMNS, as_json)


@tokens.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice(["viewer", "operator", "admin"]), required=True)
@click.option("--ttl", "ttl_seconds", type=float, help="seconds until it expires")
@api_command
def tokens_create(
    client: ApiClient, as_json: bool, name: str, role: str, ttl_seconds: float | None
) -> None:
    """Issue a token; its secret is printed once."""
    body = {"name": name, "role": role, "ttl_seconds": ttl_seconds}
    created = client.request("POST", "/api/v1/tokens", body=body)
    if as_json:
        emit([created], [], True)
    else:
        click.echo(created["token"])
        click.echo(f"token {name!r} ({created['id']}, {role}): shown once", err=True)


@tokens.command("revoke")
@click.argument("token_id")
@api_command
def tokens_revoke(client: ApiClient, as_json: bool, token_id: str) -> None:
    """Revoke a token."""
    emit([client.request("DELETE", f"/api/v1/tokens/{token_id}")], TOKEN_COLUMNS, as_json)


def add_api_commands(group: click.Group) -> None:
    """Register the API-client commands on the ``fleetcast`` group."""
    from control_plane.cli_catalog import models, versions
    from control_plane.cli_fleet import deploy, devices
    from control_plane.cli_function_aliases import functions
    from control_plane.cli_monitor import monitor
    from control_plane.cli_rollouts import rollouts

    for command in (
        admin, login, whoami, models, versions, jobs, packages, audit, tokens, rollouts,
        functions, devices, deploy, monitor,
    ):  # fmt: skip
        group.add_command(command)
