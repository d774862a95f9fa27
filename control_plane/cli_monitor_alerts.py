"""``fleetcast monitor alerts list|show|acknowledge (ack)|evaluate|deliveries``.

The routes ``GET /alerts``, ``GET /alerts/{id}``, ``POST /alerts/{id}/acknowledge``,
``POST /alerts/evaluate`` and ``GET /alerts/deliveries`` (docs/monitoring.md,
"Alerts in the control plane"); ``--json`` prints one JSON object per line.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

import click

from control_plane.api.client import ApiClient
from control_plane.cli_api import api_command
from control_plane.cli_monitor_render import Rows, fmt, print_table, when

ALIASES = {"ack": "acknowledge"}


class _Aliased(click.Group):
    """Accept the short names of :data:`ALIASES`."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, ALIASES.get(cmd_name, cmd_name))


def _quoted(alert_id: str) -> str:
    return urllib.parse.quote(alert_id, safe="")


def alert_rows(items: Iterable[Mapping[str, Any]]) -> Rows:
    columns = ["id", "rule", "severity", "state", "labels", "value", "threshold", "since",
               "fired at", "acknowledged by"]  # fmt: skip
    rows = [
        [
            str(a["id"]),
            str(a["rule"]),
            str(a["severity"]),
            str(a["state"]),
            ",".join(f"{k}={v}" for k, v in sorted(a["labels"].items())),
            fmt(a["value"]),
            f"{a['comparison']} {fmt(float(a['threshold']))}",
            when(a["since"]),
            when(a["fired_at"]),
            fmt(a["acknowledged_by"]),
        ]  # fmt: skip
        for a in items
    ]
    return columns, rows


def delivery_rows(items: Iterable[Mapping[str, Any]]) -> Rows:
    columns = ["alert", "channel", "kind", "state", "attempts", "target", "error"]
    rows = [
        [
            str(d["alert_id"]),
            str(d["channel"]),
            str(d["kind"]),
            str(d["state"]),
            fmt(d["attempts"]),
            str(d.get("target") or d.get("url")),
            fmt(d.get("last_error", d.get("error"))),
        ]  # fmt: skip
        for d in items
    ]
    return columns, rows


def _show(items: list[dict[str, Any]], rows: Rows, title: str, as_json: bool) -> None:
    if as_json:
        for item in items:
            click.echo(json.dumps(item, sort_keys=True))
        return
    print_table(title, rows)


@click.group(cls=_Aliased)
def alerts() -> None:
    """Alerts: list, show, acknowledge (ack), evaluate now, notification deliveries."""


@alerts.command("list")
@click.option("--state", type=click.Choice(["pending", "firing", "resolved"]))
@click.option("--model")
@click.option("--version")
@click.option("--severity", type=click.Choice(["info", "warning", "critical"]))
@click.option("--rule")
@api_command
def alerts_list(
    client: ApiClient,
    as_json: bool,
    state: str | None,
    model: str | None,
    version: str | None,
    severity: str | None,
    rule: str | None,
) -> None:
    """Alerts, most recently changed first."""
    query = {"state": state, "model": model, "version": version, "severity": severity,
             "rule": rule}  # fmt: skip
    items = list(client.pages("/api/v1/alerts", query))
    _show(items, alert_rows(items), "alerts", as_json)


@alerts.command("show")
@click.argument("alert_id")
@api_command
def alerts_show(client: ApiClient, as_json: bool, alert_id: str) -> None:
    """One alert."""
    got = client.request("GET", f"/api/v1/alerts/{_quoted(alert_id)}")
    _show([got], alert_rows([got]), "alert", as_json)


@alerts.command("acknowledge")
@click.argument("alert_id")
@api_command
def alerts_acknowledge(client: ApiClient, as_json: bool, alert_id: str) -> None:
    """Acknowledge a firing alert (operator; it stays firing until it resolves). Short: ack."""
    got = client.request("POST", f"/api/v1/alerts/{_quoted(alert_id)}/acknowledge")
    _show([got], alert_rows([got]), "acknowledged", as_json)


@alerts.command("evaluate")
@api_command
def alerts_evaluate(client: ApiClient, as_json: bool) -> None:
    """Evaluate the rules now (operator): the readings, the state changes, what was sent."""
    got = client.request("POST", "/api/v1/alerts/evaluate")
    if as_json:
        click.echo(json.dumps(got, sort_keys=True))
        return
    click.echo(f"{got['readings']} readings, {len(got['transitions'])} changes")
    print_table("changed alerts", alert_rows(got["transitions"]))
    print_table("deliveries", delivery_rows(got["deliveries"]))


@alerts.command("deliveries")
@click.option("--alert-id")
@click.option("--state", type=click.Choice(["pending", "delivered", "failed"]))
@api_command
def alerts_deliveries(
    client: ApiClient, as_json: bool, alert_id: str | None, state: str | None
) -> None:
    """Notification deliveries (webhook, e-mail): pending retries, delivered, failed."""
    items = list(client.pages("/api/v1/alerts/deliveries", {"alert_id": alert_id, "state": state}))
    _show(items, delivery_rows(items), "deliveries", as_json)
