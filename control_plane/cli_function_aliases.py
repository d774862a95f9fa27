"""``fleetcast functions alias get|set|list``: function aliases as an API client.

    fleetcast functions alias set fraud-scorer:live --model digits --version 7
    fleetcast functions alias set fraud-scorer:live --model digits --routes 7=90,8=10
    fleetcast functions alias get fraud-scorer:live

A rollout moves an alias by traffic steps (``fleetcast rollouts create --alias``);
while one does, ``set`` is refused (409) naming it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import click

from control_plane.api.client import ApiClient
from control_plane.cli_api import api_command, emit

COLUMNS = ("name", "model", "version", "routes", "telemetry_device", "revision", "rollout")


def _row(view: dict[str, Any]) -> dict[str, Any]:
    routes = " ".join(f"{v}={p}%" for v, p in view["routes"].items())
    return {**{k: view.get(k) for k in COLUMNS}, "routes": routes}


def parse_routes(text: str) -> dict[str, int]:
    """``7=90,8=10`` → ``{"7": 90, "8": 10}`` (the server checks the sum)."""
    routes: dict[str, int] = {}
    for part in text.split(","):
        version, eq, percent = part.strip().partition("=")
        if not eq or not version.strip():
            raise click.BadParameter(f"{part!r}: expected VERSION=PERCENT[,VERSION=PERCENT…]")
        try:
            routes[version.strip()] = int(percent.strip().rstrip("%"))
        except ValueError:
            raise click.BadParameter(f"{part!r}: {percent!r} is not a whole percent") from None
    return routes


@click.group()
def functions() -> None:
    """Serverless functions: aliases and their traffic splits (docs/functions.md)."""


@functions.group()
def alias() -> None:
    """Function aliases (FUNCTION:ALIAS → versions by traffic percentage)."""


@alias.command("get")
@click.argument("name")
@api_command
def alias_get(client: ApiClient, as_json: bool, name: str) -> None:
    """One alias: its split and the packages per version (with --json)."""
    view = client.request("GET", f"/api/v1/functions/aliases/{quote(name, safe=':')}")
    if as_json:
        emit([view], [], True)
        return
    emit([_row(view)], COLUMNS, False)


@alias.command("list")
@click.option("--model")
@api_command
def alias_list(client: ApiClient, as_json: bool, model: str | None) -> None:
    """Every function alias (filter by model)."""
    views = list(client.pages("/api/v1/functions/aliases", {"model": model}))
    emit(views if as_json else [_row(v) for v in views], COLUMNS, as_json)


@alias.command("set")
@click.argument("name")
@click.option("--model", required=True)
@click.option("--version", "version", help="Send 100% to this version.")
@click.option("--routes", help="A split: VERSION=PERCENT[,VERSION=PERCENT…] summing to 100.")
@click.option("--telemetry-device", help="The device id the containers report telemetry under.")
@api_command
def alias_set(
    client: ApiClient,
    as_json: bool,
    name: str,
    model: str,
    version: str | None,
    routes: str | None,
    telemetry_device: str | None,
) -> None:
    """Create or move an alias (refused while a rollout moves it)."""
    if (version is None) == (routes is None):
        raise click.UsageError("give exactly one of --version or --routes")
    body: dict[str, Any] = {"model": model}
    if version is not None:
        body["version"] = version
    else:
        body["routes"] = parse_routes(routes or "")
    if telemetry_device:
        body["telemetry_device"] = telemetry_device
    view = client.request("PUT", f"/api/v1/functions/aliases/{quote(name, safe=':')}", body=body)
    emit([view] if as_json else [_row(view)], COLUMNS, as_json)
