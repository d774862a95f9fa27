"""The rollout and lineage steps of `fleetcast demo`, through the REST API only.

Version 2 of the fleet's model is the same compiled package released again
(re-signed with the demo key under version 2: a new version, no second compile),
registered in the catalog as version 1 was, and rolled out to the demo fleet in
two waves (one device, then the rest) with a 1 s bake. The engine judges each
wave by its gates; the table shows them as the API returns them. The agents send
no traffic during the rollout, so the error-rate and latency gates (which need
100 requests on the new version) are turned off in the spec: the install and
availability gates decide. Then each agent scores a few digits on version 2 and
the lineage API answers "which devices run this package" from their telemetry.

Every step checks what it shows and raises ``DemoError`` (one line, non-zero
exit) when it does not hold: nothing here is printed without having happened.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from control_plane.api.client import ApiClient
from control_plane.errors import ControlPlaneError
from edge_agent.package import read_package

ROLLOUT_TIMEOUT_S = 60.0


class DemoError(ControlPlaneError):
    """A demo step did not do what it shows."""


def release_as(package: Path, version: str, private_key: Path, out_dir: Path) -> Path:
    """``package`` as ``version`` of the same model, signed with ``private_key``, written to
    ``out_dir`` under its package id."""
    from control_plane.compiler.package import build_package
    from control_plane.signing import load_private_key
    from edge_agent.core.manifest import make_package_id

    manifest, _, model_bytes = read_package(package.read_bytes())
    package_id = make_package_id(
        manifest.model_name, version, manifest.profile.id, manifest.release
    )
    manifest = manifest.model_copy(update={"model_version": version, "package_id": package_id})
    out = out_dir / f"{package_id}.fcpkg"
    out.write_bytes(build_package(manifest, model_bytes, load_private_key(private_key)))
    return out


def register_version(client: ApiClient, package: Path) -> tuple[str, str, str]:
    """The package's version and the package in the catalog, staged compiled, as the CLI
    does (`versions register`, `packages add`, `versions stage … compiled`): (model, version,
    package id)."""
    manifest = read_package(package.read_bytes())[0]
    model, version = manifest.model_name, manifest.model_version
    card = {
        "intended_use": "handwritten digits",
        "training_data": "sklearn digits",
        "owner": "demo",
    }
    client.request(
        "POST", f"/api/v1/models/{model}/versions", body={"version": version, "card": card}
    )
    client.request("POST", "/api/v1/packages", data=package.read_bytes())
    client.request(
        "POST", f"/api/v1/models/{model}/versions/{version}/stage", body={"stage": "compiled"}
    )
    return model, version, manifest.package_id


def _wait_for(check: Callable[[], Any], timeout: float, interval: float = 0.2) -> Any:
    """``check()``'s first truthy answer within ``timeout`` seconds, else its last answer."""
    deadline = time.monotonic() + timeout
    answer = check()
    while not answer and time.monotonic() < deadline:
        time.sleep(interval)
        answer = check()
    return answer


def staged_rollout(
    console: Console, client: ApiClient, model: str, version: str, devices: Sequence[str]
) -> dict[str, Any]:
    """Roll ``version`` out to the demo fleet in 2 waves and print each wave; the final view."""
    spec: dict[str, Any] = {
        "model": model,
        "version": version,
        "target": {"kind": "devices", "selector": {"demo": "fleet"}},
        "waves": [{"count": 1}, {"percent": 100}],
        "bake_s": 1,
        "min_finished": 1,
        "device_timeout_s": 30,
        "gates": {"error_rate": {"enabled": False}, "latency": {"enabled": False}},
    }
    start = time.perf_counter()
    created = client.request("POST", "/api/v1/rollouts", body=spec)
    rollout_id = created["summary"]["id"]
    path = f"/api/v1/rollouts/{rollout_id}"

    def settled() -> dict[str, Any] | None:
        view: dict[str, Any] = client.request("GET", path)
        return view if view["summary"]["phase"] != "running" else None

    view: dict[str, Any] | None = _wait_for(settled, ROLLOUT_TIMEOUT_S, 0.3)
    if view is None:
        view = client.request("GET", path)
        raise DemoError(
            f"rollout {rollout_id} still {view['summary']['phase']} after "
            f"{ROLLOUT_TIMEOUT_S:.0f} s: waves {_wave_states(view)}"
        )
    phase = view["summary"]["phase"]
    waves = view["summary"]["waves"]
    if phase != "completed" or [w["status"] for w in waves] != ["passed", "passed"]:
        raise DemoError(
            f"rollout {rollout_id} ended {phase}: waves {_wave_states(view)} "
            f"({view['summary']['reason'] or 'no reason given'})"
        )
    members = view["devices"]
    if sorted(members) != sorted(devices) or any(
        d["status"] != "succeeded" for d in members.values()
    ):
        raise DemoError(f"rollout {rollout_id}: devices {members} (expected {sorted(devices)})")
    table = Table(title=f"staged rollout {rollout_id}: {model} version {version}")
    for column in ("wave", "devices", "status", "gate verdicts"):
        table.add_column(column)
    for wave, size in zip(waves, spec["waves"], strict=True):
        names = sorted(d for d, s in members.items() if s["wave"] == wave["index"])
        gates = ", ".join(f"{g} {v}" for g, v in sorted(wave["gates"].items()))
        share = f"{size['count']} device" if "count" in size else f"{size['percent']}%"
        table.add_row(f"{wave['index'] + 1} ({share})", ", ".join(names), wave["status"], gates)
    console.print(table)
    console.print(
        f"[bold]10. staged rollout[/] of version {version} through POST /api/v1/rollouts: "
        f"{len(waves)} waves, 1 s bake each, completed in {time.perf_counter() - start:.1f} s "
        "(error-rate and latency gates off: no traffic runs during it)"
    )
    return view


def _wave_states(view: dict[str, Any]) -> str:
    return ", ".join(f"{w['name']} {w['status']} ({w['gates']})" for w in view["summary"]["waves"])


def confirm_running(client: ApiClient, model: str, version: str, devices: Sequence[str]) -> None:
    """Every device reports (its `installed` status upload) running ``version``."""

    def running() -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for device in devices:
            slot = client.request("GET", f"/api/v1/devices/{device}")["slots"].get(model)
            out[device] = slot.get("model_version") if slot else None
        return out

    if not _wait_for(lambda: set(running().values()) == {version}, 20):
        raise DemoError(f"after the rollout the devices report running {running()}, not {version}")


def devices_running(client: ApiClient, package_id: str, devices: Sequence[str]) -> list[str]:
    """`GET /api/v1/lineage?package=…&direction=down`: the devices the package runs on, by
    their telemetry (waits until every one of ``devices`` is there)."""

    def answer() -> list[str]:
        lineage = client.request(
            "GET", "/api/v1/lineage", query={"package": package_id, "direction": "down"}
        )
        start = lineage["start"]["id"]
        return sorted(
            e["dst"].removeprefix("device:")
            for e in lineage["edges"]
            if e["src"] == start and e["relation"] == "runs_on"
        )

    found: list[str] = []

    def complete() -> bool:
        found[:] = answer()
        return found == sorted(devices)

    if not _wait_for(complete, 20, 0.3):
        raise DemoError(
            f"lineage of {package_id}: runs on {answer() or 'no device'}, "
            f"expected {', '.join(sorted(devices))}"
        )
    return found
