"""``fleetcast rollouts create|list|status|watch|pause|resume|abort|rollback|approve``.

``create`` takes the spec as a JSON file (``--spec spec.json``) or the
common fields as options; everything else in docs/rollouts.md ("The spec")
goes in the file. ``watch`` redraws per-wave bars from ``GET /rollouts/{id}``
until the rollout stops moving (completed, aborted, rolled back) or Ctrl-C.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from control_plane.api.client import ApiClient
from control_plane.cli_api import api_command, emit

COLUMNS = ("id", "model", "version", "phase", "current_wave", "waves", "reason")
SETTLED = ("completed", "aborted", "rolled_back")
NOT_IN_TOTAL = ("left", "rolled_back", "rollback_done", "rollback_failed", "reverted")
"""Summary counts beside the status buckets (left devices are not in the wave's total)."""


def _row(summary: dict[str, Any]) -> dict[str, Any]:
    waves = " ".join(f"{w['index']}:{w['status']}" for w in summary["waves"])
    return {**{k: summary.get(k) for k in COLUMNS}, "waves": waves}


def _selector(text: str | None) -> dict[str, str]:
    labels: dict[str, str] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise click.BadParameter(f"{text!r}: expected key=value[,key=value…]")
        labels[key.strip()] = value.strip()
    return labels


def _waves(text: str) -> list[dict[str, int]]:
    """``1,20%,100%`` → a count, then percentages."""
    waves: list[dict[str, int]] = []
    for part in text.split(","):
        part = part.strip()
        try:
            waves.append(
                {"percent": int(part[:-1])} if part.endswith("%") else {"count": int(part)}
            )
        except ValueError:
            raise click.BadParameter(
                f"{part!r}: expected a count (5) or a percentage (20%)"
            ) from None
    return waves


def _traffic(text: str) -> list[dict[str, int]]:
    """``5,25,50,100`` (or ``5%,…``) → traffic steps of an alias rollout."""
    try:
        return [{"traffic": int(part.strip().rstrip("%"))} for part in text.split(",")]
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected traffic percentages, 5,25,50,100") from None


@click.group()
def rollouts() -> None:
    """Staged, gated rollouts of a version to devices or a function alias (docs/rollouts.md)."""


@rollouts.command("create")
@click.option("--spec", "spec_file", type=click.Path(exists=True, path_type=Path),
              help="The whole spec as JSON (options below override its fields).")  # fmt: skip
@click.option("--model")
@click.option("--version")
@click.option("--selector", help="Target devices: key=value[,key=value…]")
@click.option("--alias", "alias", help="Target a function alias (FUNCTION:ALIAS) instead.")
@click.option(
    "--waves",
    help="Devices: 1,20%,100% (a count or a percentage each); "
    "an alias: traffic steps 5,25,50,100 (percent of requests)",
)
@click.option("--bake", "bake_s", type=float, help="Seconds a wave bakes before its gates judge.")
@api_command
def rollouts_create(
    client: ApiClient,
    as_json: bool,
    spec_file: Path | None,
    model: str | None,
    version: str | None,
    selector: str | None,
    alias: str | None,
    waves: str | None,
    bake_s: float | None,
) -> None:
    """Start a rollout; the server refuses naming a bad field or a profile without a package."""
    spec: dict[str, Any] = json.loads(spec_file.read_text()) if spec_file else {}
    if model:
        spec["model"] = model
    if version:
        spec["version"] = version
    if alias is not None and selector is not None:
        raise click.UsageError("give --selector (devices) or --alias (a function alias), not both")
    if alias is not None:
        spec["target"] = {"kind": "alias", "alias": alias}
    elif selector is not None or "target" not in spec:
        spec["target"] = {"kind": "devices", "selector": _selector(selector)}
    if waves:
        spec["waves"] = _traffic(waves) if spec["target"]["kind"] == "alias" else _waves(waves)
    if bake_s is not None:
        spec["bake_s"] = bake_s
    made = client.request("POST", "/api/v1/rollouts", body=spec)
    emit([_row(made["summary"])], COLUMNS, as_json)


@rollouts.command("list")
@click.option("--phase")
@click.option("--model")
@api_command
def rollouts_list(client: ApiClient, as_json: bool, phase: str | None, model: str | None) -> None:
    """Rollouts, newest first."""
    rows = client.pages("/api/v1/rollouts", {"phase": phase, "model": model})
    emit([_row(r) for r in rows], COLUMNS, as_json)


@rollouts.command("status")
@click.argument("rollout_id")
@api_command
def rollouts_status(client: ApiClient, as_json: bool, rollout_id: str) -> None:
    """One rollout: per wave, devices by status and the gates' verdicts."""
    got = client.request("GET", f"/api/v1/rollouts/{rollout_id}")
    if as_json:
        click.echo(json.dumps(got, sort_keys=True))
        return
    emit([_row(got["summary"])], COLUMNS, False)
    click.echo(render(got))


def render(view: dict[str, Any]) -> str:
    """Per-wave text bars (what ``watch`` redraws)."""
    lines = []
    for wave in view["summary"]["waves"]:
        counts = wave["devices"]
        total = sum(v for k, v in counts.items() if k not in NOT_IN_TOTAL)
        done = counts.get("succeeded", 0)
        bad = counts.get("failed", 0) + counts.get("timed_out", 0)
        width = 30
        filled = round(width * done / total) if total else 0
        failed = round(width * bad / total) if total else 0
        bar = "█" * filled + "✗" * failed + "·" * max(0, width - filled - failed)
        gates = " ".join(f"{g}={v}" for g, v in wave["gates"].items()) or "-"
        if wave.get("traffic") is not None:  # an alias rollout: a traffic step, no devices
            step = f"traffic {wave['traffic']}%"
            lines.append(f"wave {wave['index']} {wave['status']:<17} {step} gates: {gates}")
            continue
        back = ""
        if counts.get("rolled_back") or counts.get("reverted"):
            back = (
                f" rolled back {counts.get('rollback_done', 0)}/{counts.get('rolled_back', 0)}"
                f" (failed {counts.get('rollback_failed', 0)}),"
                f" reverted by the device {counts.get('reverted', 0)}"
            )
        lines.append(
            f"wave {wave['index']} {wave['status']:<17} {bar} {done}/{total} "
            f"(installing {counts.get('installing', 0)}, failed {bad}){back} gates: {gates}"
        )
    return "\n".join(lines)


@rollouts.command("watch")
@click.argument("rollout_id")
@click.option("--interval", type=float, default=1.0, show_default=True)
@api_command
def rollouts_watch(client: ApiClient, as_json: bool, rollout_id: str, interval: float) -> None:
    """A live view of the waves until the rollout settles (Ctrl-C to stop watching)."""
    from rich.live import Live
    from rich.text import Text

    def frame() -> tuple[dict[str, Any], Text]:
        got = client.request("GET", f"/api/v1/rollouts/{rollout_id}")
        s = got["summary"]
        head = f"{s['id']} {s['model']} {s['version']}: {s['phase']}"
        head += f" ({s['reason']})" if s.get("reason") else ""
        return got, Text(head + "\n" + render(got))

    got, text = frame()
    with Live(text, refresh_per_second=4) as live:
        while got["summary"]["phase"] not in SETTLED:
            time.sleep(interval)
            got, text = frame()
            live.update(text)


def _command(verb: str, help_text: str) -> click.Command:
    @click.argument("rollout_id")
    @click.option("--reason", default="", help="Recorded in the audit log.")
    @api_command
    def run(client: ApiClient, as_json: bool, rollout_id: str, reason: str, **extra: Any) -> None:
        body = {"reason": reason, **extra}
        done = client.request("POST", f"/api/v1/rollouts/{rollout_id}/{verb}", body=body)
        emit([_row(done["summary"])], COLUMNS, as_json)

    run.__doc__ = help_text
    if verb == "rollback":
        run = click.option(
            "--scope", type=click.Choice(["wave", "all"]), default="all", show_default=True
        )(run)
    return rollouts.command(verb)(run)


for _verb, _help in (
    ("pause", "Stop dispatching new installs (those under way finish)."),
    ("resume", "Continue a paused rollout."),
    ("abort", "Stop where it is, without rolling back."),
    ("rollback", "Roll back the current wave or every device the rollout touched."),
    ("approve", "Approve the wave that waits for an operator."),
):
    _command(_verb, _help)
