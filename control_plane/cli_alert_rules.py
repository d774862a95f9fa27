"""``fleetcast alert-rules list|set|delete``: a model's alert rules, as an API client.

    fleetcast alert-rules list digits
    fleetcast alert-rules set digits error_rate --threshold 0.02         # override one field
    fleetcast alert-rules set digits accuracy_floor --metric accuracy --threshold 0.9 \\
        --comparison '<' --severity critical --gates-rollout             # add a rule
    fleetcast alert-rules set digits silent_devices --disable            # turn a default off
    fleetcast alert-rules delete digits error_rate                       # back to the default

A field left out of ``set`` is the default rule's of the same name (a new rule needs
``--metric`` and ``--threshold``); the server checks every field (docs/monitoring.md).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import click

from control_plane.api.client import ApiClient
from control_plane.cli_api import api_command, emit
from control_plane.core.alert_rules import COMPARISONS, METRICS, SEVERITIES

COLUMNS = ("name", "rule", "window", "for", "severity", "flags", "on", "source")


def _row(view: dict[str, Any]) -> dict[str, Any]:
    """A table row; ``source``: default (the code's rule), override (a stored rule replacing
    the default of its name) or added (a stored rule of a new name)."""
    source = view["source"]
    if source == "stored":
        source = "override" if view.get("overrides_default") else "added"
    flags = [label for f, label in (("gates_rollout", "gate"), ("retrain", "retrain")) if view[f]]
    return {
        "name": view["name"],
        "rule": f"{view['metric']} {view['comparison']} {view['threshold']:g}",
        "window": f"{view['window_s']:g}s",
        "for": f"{view['for_s']:g}s",
        "severity": view["severity"],
        "flags": ",".join(flags) or "-",
        "on": "yes" if view["enabled"] else "no",
        "source": source,
    }


def _url(model: str, rule: str) -> str:
    return f"/api/v1/alert-rules/{quote(model, safe='')}/{quote(rule, safe='')}"


@click.group("alert-rules")
def alert_rules() -> None:
    """Alert rules per model: the defaults, and an operator's overrides (docs/monitoring.md)."""


@alert_rules.command("list")
@click.argument("model")
@api_command
def rules_list(client: ApiClient, as_json: bool, model: str) -> None:
    """The model's rules in effect: default or stored, enabled or not."""
    views = client.request("GET", "/api/v1/alert-rules", query={"model": model})["items"]
    emit(views if as_json else [_row(v) for v in views], COLUMNS, as_json)


@alert_rules.command("set")
@click.argument("model")
@click.argument("rule")
@click.option("--metric", type=click.Choice(METRICS), help="Required for a new rule.")
@click.option("--threshold", type=float, help="Required for a new rule.")
@click.option("--comparison", type=click.Choice(COMPARISONS), help="value OP threshold breaches")
@click.option("--window", "window_s", type=float, help="Seconds the readings are averaged over.")
@click.option("--for", "for_s", type=float, help="Seconds the breach must last before firing.")
@click.option("--severity", type=click.Choice(SEVERITIES))
@click.option("--gates-rollout/--no-gates-rollout", default=None, help="Firing blocks rollouts.")
@click.option("--retrain/--no-retrain", default=None, help="Firing asks for retraining.")
@click.option("--disable", is_flag=True, help="Store the rule switched off (a default too).")
@api_command
def rules_set(
    client: ApiClient,
    as_json: bool,
    model: str,
    rule: str,
    disable: bool,
    **fields: Any,
) -> None:
    """Store a rule for MODEL: replaces the default named RULE, or adds one (audited)."""
    body = {k: v for k, v in fields.items() if v is not None}
    body["enabled"] = not disable
    view = client.request("PUT", _url(model, rule), body=body)
    emit([view] if as_json else [_row(view)], COLUMNS, as_json)


@alert_rules.command("delete")
@click.argument("model")
@click.argument("rule")
@api_command
def rules_delete(client: ApiClient, as_json: bool, model: str, rule: str) -> None:
    """Remove a stored rule: the default of its name applies again, or the rule is gone."""
    answer = client.request("DELETE", _url(model, rule))
    if as_json:
        emit([answer], [], True)
        return
    now = answer["effective"]
    click.echo(
        f"{model} {rule}: stored rule removed; "
        + ("the default applies: " + _row(now)["rule"] if now else "no rule of this name now")
    )
