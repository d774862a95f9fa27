"""``fleetcast monitor drift|accuracy|feedback|alerts|explain|attributions|lineage|…``.

The monitoring routes (docs/monitoring.md) from the command line, as a client
of the REST API like every command of ``cli_api.py``: ``--server``
(``FLEETCAST_SERVER``), the token of ``FLEETCAST_TOKEN`` or ``fleetcast login``,
and ``--json`` (the route's answer as JSON instead of tables). Drift, accuracy
and feedback are here; alerts in ``cli_monitor_alerts.py``; explanations,
attributions, lineage, OpenLineage and /metrics in ``cli_monitor_insights.py``. Tables go through
``cli_monitor_render.py`` (pure: view dicts in, rows out).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from control_plane.api.client import ApiClient
from control_plane.cli_api import api_command
from control_plane.cli_monitor_feedback import MAX_CHUNK, Labels, parse_feedback, parse_pairs
from control_plane.cli_monitor_render import (
    accuracy_rows,
    drift_rows,
    feature_rows,
    group_rows,
    print_table,
    sliding_rows,
    unevaluated_rows,
)
from control_plane.cli_monitor_time import when_option

GROUP_HELP = "Only devices carrying this label: label=value (e.g. site=berlin)."
GROUP_BY_HELP = "One report per value of this device label (e.g. site)."


def check_group(
    ctx: click.Context | None, param: click.Parameter | None, value: str | None
) -> str | None:
    """``--group`` must be ``label=value`` (checked here, before any request)."""
    if value is None:
        return None
    key, eq, _ = value.partition("=")
    if not eq or not key.strip():
        raise click.BadParameter(f"{value!r}: expected label=value (e.g. site=berlin)")
    return value


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, sort_keys=True))


@click.group()
def monitor() -> None:
    """Drift, accuracy, feedback labels, alerts, explanations and lineage (docs/monitoring.md)."""


@monitor.command("drift")
@click.argument("model")
@click.option("--version")
@click.option("--device", help="Only this device's windows.")
@click.option("--group", callback=check_group, help=GROUP_HELP)
@click.option("--group-by", help=GROUP_BY_HELP)
@click.option("--since", callback=when_option, metavar="TIME", help="Windows started at or after.")
@click.option("--until", callback=when_option, metavar="TIME", help="Windows started before.")
@click.option("--step-seconds", type=float, help="Add the sliding drift score per step.")
@click.option("--width", type=int, help="Steps merged by the sliding score (server default 3).")
@click.option("--features", "show_features", is_flag=True, help="Also each feature's figures.")
@api_command
def monitor_drift(
    client: ApiClient,
    as_json: bool,
    model: str,
    version: str | None,
    device: str | None,
    group: str | None,
    group_by: str | None,
    since: float | None,
    until: float | None,
    step_seconds: float | None,
    width: int | None,
    show_features: bool,
) -> None:
    """MODEL's windows merged per (device group, package), each evaluated against its
    package's reference statistics; windows that could not be evaluated, with the reason.

    --since/--until take epoch seconds, an ISO 8601 time (2026-11-30T08:00Z) or an
    age (24h: 24 hours ago)."""
    query = {
        "model": model, "version": version, "device": device, "group": group,
        "group_by": group_by, "since": since, "until": until, "step_seconds": step_seconds,
        "width": width,
    }  # fmt: skip
    got = client.request("GET", "/api/v1/drift", query=query)
    if as_json:
        _print_json(got)
        return
    click.echo(f"{got['model']} {got['version'] or 'all versions'}: "
               f"{got['windows']} windows, {got['rows']} rows")  # fmt: skip
    print_table("drift per group and package", drift_rows(got["reports"]))
    for report in got["reports"]:
        if report.get("sliding"):
            title = f"sliding drift: {report['group']} {report.get('package_id')}"
            print_table(title, sliding_rows(report["sliding"]))
        if show_features:
            title = f"features: {report['group']} {report.get('package_id')}"
            print_table(title, feature_rows(report["features"]))
    if got["unevaluated"]:
        print_table("unevaluated windows", unevaluated_rows(got["unevaluated"]))


@monitor.command("accuracy")
@click.argument("model")
@click.argument("version")
@click.option("--bucket-seconds", type=float, help="Bucket width (server default 3600).")
@click.option("--group", callback=check_group, help=GROUP_HELP)
@click.option("--group-by", help=GROUP_BY_HELP)
@api_command
def monitor_accuracy(
    client: ApiClient,
    as_json: bool,
    model: str,
    version: str,
    bucket_seconds: float | None,
    group: str | None,
    group_by: str | None,
) -> None:
    """MODEL VERSION's measured accuracy (from feedback labels) per bucket of prediction
    time, beside the estimated (CBPE, from every capture, labelled or not)."""
    query = {"model": model, "version": version, "bucket_seconds": bucket_seconds,
             "group": group, "group_by": group_by}  # fmt: skip
    got = client.request("GET", "/api/v1/accuracy", query=query)
    if as_json:
        _print_json(got)
        return
    estimated = got.get("estimated") or {}
    reference = estimated.get("reference_accuracy")
    click.echo(
        f"{got['model']} {got['version']} ({got['task']}, output {got['output']}): "
        f"{got['captures']} captures, {got['labelled']} labelled"
        + ("" if reference is None else f"; reference accuracy {reference:.4f}")
    )
    if estimated:
        click.echo(f"estimated: {estimated.get('method')}; {estimated.get('calibration')}")
    if got.get("groups"):
        print_table("per group", group_rows(got["groups"], got["task"]))
    title = "measured (labels) vs estimated (CBPE) per bucket"
    print_table(title, accuracy_rows(got["buckets"], estimated.get("buckets"), got["task"]))


@monitor.command("feedback")
@click.argument("file", required=False, type=click.Path(path_type=Path, allow_dash=True))
@click.option("--label", "pairs", multiple=True, help="PREDICTION_ID=LABEL (repeat).")
@api_command
def monitor_feedback(
    client: ApiClient, as_json: bool, file: Path | None, pairs: tuple[str, ...]
) -> None:
    """Send true labels of captured predictions: FILE (CSV prediction_id,label with or
    without a header, JSON lines {"prediction_id", "label"}, or a JSON array of them;
    - reads stdin) and/or --label. Everything is checked before anything is sent,
    then sent in chunks of 10,000; ids no stored capture has are listed (their labels
    are kept: a capture uploaded later joins them)."""
    labels: Labels = []
    if file is not None:
        with click.open_file(str(file), encoding="utf-8") as stream:  # "-": stdin
            text: str = stream.read()
        labels += parse_feedback(text, "stdin" if str(file) == "-" else str(file))
    labels += parse_pairs(pairs)
    if not labels:
        raise click.UsageError("give a FILE and/or --label PREDICTION_ID=LABEL")
    totals = send_feedback(client, labels)
    if as_json:
        _print_json(totals)
        return
    click.echo(
        f"received {totals['received']}, matched {totals['matched']}, "
        f"unknown {len(totals['unknown_ids'])}, duplicate {len(totals['duplicate_ids'])}"
        f" ({totals['requests']} request{'s' if totals['requests'] != 1 else ''})"
    )
    if totals["unknown_ids"]:
        click.echo("unknown prediction ids (labels kept; a later capture upload joins them):")
        for pid in totals["unknown_ids"]:
            click.echo(f"  {pid}")
    if totals["duplicate_ids"]:
        click.echo("labelled more than once (the last label counts):")
        for pid in totals["duplicate_ids"]:
            click.echo(f"  {pid}")


def send_feedback(client: ApiClient, labels: Labels) -> dict[str, Any]:
    """POST the labels in chunks of at most :data:`MAX_CHUNK`; the summed answers.

    An id given twice is sent once with its last label (as the server keeps the
    last label of an id) and reported under ``duplicate_ids``, even when the two
    would have fallen in different chunks; ``received`` counts every label read."""
    unique = dict(labels)  # the last label of an id wins
    counts: dict[str, int] = {}
    for pid, _ in labels:
        counts[pid] = counts.get(pid, 0) + 1
    duplicate = dict.fromkeys(p for p, n in counts.items() if n > 1)
    unknown: dict[str, None] = {}
    totals: dict[str, Any] = {"received": len(labels), "matched": 0, "requests": 0}
    items = list(unique.items())
    for start in range(0, len(items), MAX_CHUNK):
        chunk = items[start : start + MAX_CHUNK]
        body = {"labels": [{"prediction_id": p, "label": v} for p, v in chunk]}
        got = client.request("POST", "/api/v1/feedback", body=body)
        totals["matched"] += got["matched"]
        totals["requests"] += 1
        unknown.update(dict.fromkeys(got["unknown_ids"]))
        duplicate.update(dict.fromkeys(got["duplicate_ids"]))
    return {**totals, "unknown_ids": list(unknown), "duplicate_ids": list(duplicate)}


def _register() -> None:
    from control_plane.cli_monitor_alerts import alerts
    from control_plane.cli_monitor_insights import (
        attributions,
        explain,
        lineage,
        metrics,
        openlineage,
    )

    for command in (alerts, explain, attributions, lineage, openlineage, metrics):
        monitor.add_command(command)


_register()
