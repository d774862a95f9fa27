"""``fleetcast devices …`` and ``fleetcast deploy …``: the fleet, as a client of the REST API.

Like every command of ``cli_api.py`` they take ``--server URL``
(``FLEETCAST_SERVER``), the token from ``FLEETCAST_TOKEN`` or ``fleetcast
login``'s config file, and ``--json``. None of them opens the store.
"""

from __future__ import annotations

import json
import re
from typing import Any

import click

from control_plane.api.client import ApiClient
from control_plane.cli_api import api_command, emit

DEVICE_COLUMNS = [
    "id", "status", "labels", "profile_id", "agent_version", "last_seen", "revoked_at",
]  # fmt: skip


def duration(value: str) -> float:
    """``90``, ``90s``, ``30m``, ``24h`` or ``7d`` -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", value)
    if not match:
        raise click.BadParameter(f"{value!r}: expected a duration such as 90s, 30m, 24h or 7d")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


def parse_labels(pairs: tuple[str, ...] | list[str], hint: str) -> dict[str, str]:
    labels = {}
    for part in pairs:
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise click.BadParameter(f"{part!r}: expected key=value", param_hint=hint)
        labels[key.strip()] = value.strip()
    return labels


@click.group()
def devices() -> None:
    """Devices and enrollment tokens (over the API)."""


@devices.command("token")
@click.option("--device-id", help="bind the token to this device id")
@click.option(
    "--count",
    type=click.IntRange(min=1, max=10_000),
    help="Mint COUNT tokens bound to ids PREFIX0000, PREFIX0001, ... (--device-id is the "
    'prefix); prints one JSON object {"device_id", "token"} per line.',
)
@click.option(
    "--ttl", default="24h", show_default=True, help="How long the token is valid (90s, 30m, 7d)."
)
@api_command
def devices_token(
    client: ApiClient, as_json: bool, device_id: str | None, count: int | None, ttl: str
) -> None:
    """Print a one-time enrollment token, or COUNT of them for a batch of devices (operator)."""
    if count is not None:
        if not device_id:
            raise click.UsageError("--count needs --device-id, the prefix of the ids")
        width = max(4, len(str(count - 1)))
        ids = [f"{device_id}{i:0{width}d}" for i in range(count)]
        body = {"device_ids": ids, "ttl_seconds": duration(ttl)}
        made = client.request("POST", "/api/v1/enrollment-tokens/batch", body=body)
        for pair in made["tokens"]:
            click.echo(json.dumps(pair))
        return
    body = {"device_id": device_id, "ttl_seconds": duration(ttl)}
    made = client.request("POST", "/api/v1/enrollment-tokens", body=body)
    if as_json:
        emit([made], [], True)
    else:
        click.echo(made["token"])


@devices.command("list")
@click.option("--status", type=click.Choice(["active", "revoked"]))
@click.option("--profile")
@click.option("--selector", help="labels that must match: key=value,key2=value2")
@api_command
def devices_list(
    client: ApiClient,
    as_json: bool,
    status: str | None,
    profile: str | None,
    selector: str | None,
) -> None:
    """Devices (filter by status, profile, label selector); warns, on the control plane's host,
    while `fleetcast serve` runs with --insecure."""
    from control_plane.server import insecure_notice
    from control_plane.settings import Settings

    settings = click.get_current_context().find_object(Settings)
    notice = insecure_notice(settings.data_dir) if settings is not None else None
    if notice:
        click.echo(f"warning: {notice}", err=True)
    query = {"status": status, "profile": profile, "selector": selector}
    emit(client.pages("/api/v1/devices", query), DEVICE_COLUMNS, as_json)


@devices.command("show")
@click.argument("device_id")
@api_command
def devices_show(client: ApiClient, as_json: bool, device_id: str) -> None:
    """One device (its slots and host report with --json)."""
    emit([client.request("GET", f"/api/v1/devices/{device_id}")], DEVICE_COLUMNS, as_json)


@devices.command("set")
@click.argument("device_id")
@click.option("--label", "labels", multiple=True, help="key=value (repeat); replaces the labels")
@click.option("--clear-labels", is_flag=True, help="Remove every label.")
@click.option("--profile", help="the device's hardware profile id")
@api_command
def devices_set(
    client: ApiClient,
    as_json: bool,
    device_id: str,
    labels: tuple[str, ...],
    clear_labels: bool,
    profile: str | None,
) -> None:
    """Set DEVICE_ID's labels and/or hardware profile (operator)."""
    body: dict[str, Any] = {}
    if labels or clear_labels:
        body["labels"] = parse_labels(labels, "--label")
    if profile:
        body["profile_id"] = profile
    if not body:
        raise click.UsageError("give --label, --clear-labels and/or --profile")
    emit(
        [client.request("PATCH", f"/api/v1/devices/{device_id}", body=body)],
        DEVICE_COLUMNS,
        as_json,
    )


@devices.command("revoke")
@click.argument("device_id")
@api_command
def devices_revoke(client: ApiClient, as_json: bool, device_id: str) -> None:
    """Cut a device off both transports (the running server drops its MQTT login)."""
    done = client.request("POST", f"/api/v1/devices/{device_id}/revoke")
    if as_json:
        emit([done], [], True)
    else:
        click.echo(f"revoked {device_id}")


@click.command()
@click.argument("model")
@click.argument("version")
@click.option("--device", "device_id", help="one device id")
@click.option("--selector", help="labels every target has: key=value,key2=value2")
@api_command
def deploy(
    client: ApiClient,
    as_json: bool,
    model: str,
    version: str,
    device_id: str | None,
    selector: str | None,
) -> None:
    """Deploy MODEL's VERSION (or an alias) to a device or every device a selector matches.

    Each device gets the version's package for its profile; a profile without a
    package refuses the whole deployment, naming it. A package file enters the
    catalog with `fleetcast packages add FILE`.
    """
    if (device_id is None) == (selector is None):
        raise click.UsageError("give exactly one of --device or --selector")
    body: dict[str, Any] = {"model": model, "version": version}
    if device_id:
        body["device_id"] = device_id
    else:
        body["selector"] = parse_labels((selector or "").split(","), "--selector")
    done = client.request("POST", "/api/v1/deployments", body=body)
    emit(done["commands"], ["device_id", "command_id", "execution_version", "sha256"], as_json)
