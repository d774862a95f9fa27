"""``fleetcast monitor explain|attributions|lineage|openlineage|metrics``.

The read routes of ``api/insights.py`` (viewer): one prediction's SHAP
attributions, the background job's attribution drift, the loop's lineage graph
from one dataset, prediction, package or device, and its OpenLineage run events;
and the server's Prometheus ``/metrics`` as a table (parsed by prometheus-client).
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

import click

from control_plane.api.client import ApiClient
from control_plane.cli_api import api_command
from control_plane.cli_monitor_render import Rows, features_cell, fmt, print_table, when
from control_plane.cli_monitor_time import when_option

NODE_ATTRS = 4  # attributes shown per lineage node in the table (all with --json)


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, sort_keys=True))


def explanation_lines(got: Mapping[str, Any]) -> list[str]:
    add = got["additivity"]
    return [
        f"prediction {got['prediction_id']} on {got['device_id']}: {got['model']} "
        f"{got['version']}, package {got['package_id']} ({got['package_sha256'][:12]})",
        f"explained {got['output']}[{got['output_index']}] ({got['explained']}): base value "
        f"{fmt(got['base_value'])}, prediction {fmt(got['prediction'])} "
        f"(captured {fmt(got['captured_output'])})",
        f"additivity: sum of SHAP + base {fmt(add['sum_plus_base'])}, error {fmt(add['error'], 6)}"
        f", tolerance {fmt(add['tolerance'], 6)}: {'holds' if add['holds'] else 'DOES NOT HOLD'}"
        + (" (cached)" if got.get("cached") else ""),
    ]


def attribution_rows(entries: Iterable[Mapping[str, Any]]) -> Rows:
    columns = ["package", "window start", "captures", "rows explained", "status",
               "top-k overlap", "entered top-k", "left top-k"]  # fmt: skip
    rows = []
    for entry in entries:
        for w in entry["windows"]:
            drift = w.get("attribution_drift") or {}
            rows.append(
                [
                    str(entry.get("package_id") or entry["package_sha256"][:12]),
                    when(w["window_start"]),
                    fmt(w["captures"]),
                    fmt(w["rows_explained"]),
                    fmt(drift.get("status")),
                    fmt(drift.get("top_k_overlap")),
                    features_cell(drift.get("entered_top_k", [])),
                    features_cell(drift.get("left_top_k", [])),
                ]  # fmt: skip
            )
    return columns, rows


def node_rows(nodes: Iterable[Mapping[str, Any]]) -> Rows:
    def attrs(node: Mapping[str, Any]) -> str:
        items = [f"{k}={v}" for k, v in sorted(node["attrs"].items()) if v is not None]
        more = len(items) - NODE_ATTRS
        return ", ".join(items[:NODE_ATTRS]) + (f", … +{more}" if more > 0 else "")

    return ["kind", "id", "attributes"], [[n["kind"], n["id"], attrs(n)] for n in nodes]


def edge_rows(edges: Iterable[Mapping[str, Any]]) -> Rows:
    return ["from", "relation", "to"], [[e["src"], e["relation"], e["dst"]] for e in edges]


@click.command("explain")
@click.argument("prediction_id")
@click.option("--device", help="The device, when several captured the id.")
@click.option("--top", default=10, show_default=True, help="Features shown (0: all).")
@api_command
def explain(
    client: ApiClient, as_json: bool, prediction_id: str, device: str | None, top: int
) -> None:
    """A captured prediction's per-feature SHAP attributions, largest |SHAP| first."""
    path = f"/api/v1/predictions/{urllib.parse.quote(prediction_id, safe='')}/explanation"
    got = client.request("GET", path, query={"device": device})
    if as_json:
        _print_json(got)
        return
    for line in explanation_lines(got):
        click.echo(line)
    shown = got["attributions"] if top <= 0 else got["attributions"][:top]
    rows = [[str(a["feature"]), fmt(a["value"]), fmt(a["shap"], 6)] for a in shown]
    print_table("attributions", (["feature", "value", "shap"], rows))
    hidden = len(got["attributions"]) - len(shown)
    if hidden:
        click.echo(f"… {hidden} more features (--top 0 shows all)")


@click.command("attributions")
@click.argument("model")
@click.option("--version")
@click.option("--since", callback=when_option, metavar="TIME", help="Windows starting at or after.")
@click.option("--until", callback=when_option, metavar="TIME", help="Windows starting before.")
@api_command
def attributions(
    client: ApiClient,
    as_json: bool,
    model: str,
    version: str | None,
    since: float | None,
    until: float | None,
) -> None:
    """Mean |SHAP| per window and package (the background job) and attribution drift."""
    query = {"model": model, "version": version, "since": since, "until": until}
    got = client.request("GET", "/api/v1/attributions", query=query)
    if as_json:
        _print_json(got)
        return
    print_table("attribution drift per window", attribution_rows(got["packages"]))


@click.command("lineage")
@click.option("--dataset", help="A dataset's sha256 (default direction: down).")
@click.option("--prediction", help="A prediction id (default direction: up).")
@click.option("--package", help="A package id or sha256 (default direction: up).")
@click.option("--device", help="A device id (default direction: up).")
@click.option("--direction", type=click.Choice(["up", "down"]))
@api_command
def lineage(
    client: ApiClient,
    as_json: bool,
    dataset: str | None,
    prediction: str | None,
    package: str | None,
    device: str | None,
    direction: str | None,
) -> None:
    """The loop's lineage from exactly one of --dataset, --prediction, --package, --device."""
    starts = {"dataset": dataset, "prediction": prediction, "package": package, "device": device}
    if sum(v is not None for v in starts.values()) != 1:
        raise click.UsageError("give exactly one of --dataset, --prediction, --package, --device")
    got = client.request("GET", "/api/v1/lineage", query={**starts, "direction": direction})
    if as_json:
        _print_json(got)
        return
    click.echo(f"from {got['start']['id']}, {got['direction']}stream")
    print_table("nodes", node_rows(got["nodes"]))
    print_table("edges", edge_rows(got["edges"]))
    if got.get("devices_running") is not None:
        print_table("devices and functions running it", node_rows(got["devices_running"]))
    if got.get("downstream") is not None:
        print_table("its feedback and explanations", node_rows(got["downstream"]))


@click.command("openlineage")
@click.option("--model", help="Only this model's events.")
@api_command
def openlineage(client: ApiClient, as_json: bool, model: str | None) -> None:
    """The lineage as OpenLineage run events; --json: one event per line, for a consumer."""
    events = client.request("GET", "/api/v1/lineage/openlineage", query={"model": model})["events"]
    if as_json:
        for event in events:
            _print_json(event)
        return
    rows = [
        [
            e["job"]["name"],
            e["eventType"],
            e["eventTime"],
            e["run"]["runId"],
            ", ".join(i["name"] for i in e.get("inputs", [])),
            ", ".join(o["name"] for o in e.get("outputs", [])),
        ]  # fmt: skip
        for e in events
    ]
    print_table(
        "OpenLineage run events", (["job", "event", "time", "run", "inputs", "outputs"], rows)
    )


def metric_rows(text: str, prefixes: tuple[str, ...]) -> list[dict[str, Any]]:
    """The samples of a Prometheus exposition whose name starts with one of ``prefixes``
    (histogram buckets and ``_created`` stamps left out unless a prefix names them)."""
    from prometheus_client.parser import text_string_to_metric_families

    out = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            named = any(s.name.startswith(p) for p in prefixes)
            noise = s.name.endswith(("_bucket", "_created")) and not any(
                p.endswith(("_bucket", "_created")) for p in prefixes
            )
            if named and not noise:
                out.append({"name": s.name, "labels": dict(s.labels), "value": s.value})
    return out


@click.command("metrics")
@click.option(
    "--name",
    "prefixes",
    multiple=True,
    help="Samples whose name starts with this (repeat; default: every fleetcast_ one).",
)
@api_command
def metrics(client: ApiClient, as_json: bool, prefixes: tuple[str, ...]) -> None:
    """The server's /metrics (drift share, PSI, ingest counts, alerts, ...) as a table."""
    samples = metric_rows(client.download("/metrics").decode(), prefixes or ("fleetcast_",))
    if as_json:
        for sample in samples:
            _print_json(sample)
        return
    rows = [
        [s["name"], ",".join(f"{k}={v}" for k, v in sorted(s["labels"].items())), fmt(s["value"])]
        for s in samples
    ]
    print_table("metrics", (["metric", "labels", "value"], rows))
