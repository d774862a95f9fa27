"""The fleet half of `fleetcast demo`: a control plane, two agents, a rollout, telemetry.

The control plane serves gRPC and an embedded mosquitto in this process; two
`fleetcast-agent` daemons run as their own processes on this machine, one talking gRPC
and one MQTT. The operator's steps go through the REST API as the CLI sends them (an
admin token as `fleetcast admin init` makes it; the version and its package into the
catalog; enrollment tokens; the devices' profile and labels; `fleetcast deploy MODEL
VERSION --selector`). Each agent enrolls with its one-time token, receives a deploy
command, downloads, verifies, self-tests and switches to the package, scores held-out
digits sent through its local gRPC API, and reports telemetry windows, which the control
plane stores once each. The control plane then judges drift from those windows against
the package's reference statistics (clean digits, then dimmed ones:
control_plane/demo_monitoring.py); the true labels of predictions at two sites (one a
noisy sensor) come back later and the accuracy API measures each site apart, beside its
confidence-based estimate; an admin token reads the same fleet and its audit log over the
REST API. Last, version 2 goes out in a staged rollout and the lineage API names the
devices running it (control_plane/demo_rollout.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from control_plane.api.client import ApiClient
from control_plane.demo_rollout import register_version
from control_plane.server import ControlPlane, ServeOptions
from control_plane.signing import PRIVATE_NAME, PUBLIC_NAME
from edge_agent.package import read_package

LABELLED = 150  # digits per site whose true labels come back in step 8


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def _agent_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "edge_agent", *args]


def _score(address: str, x: np.ndarray, y: np.ndarray) -> float:
    """Score ``x`` through an agent's local gRPC API, 16 rows a call; the accuracy."""
    import grpc

    from edge_agent.local_api import decode_tensor, encode_tensor
    from edge_agent.proto.fleetcast.v1 import scoring_pb2 as pb
    from edge_agent.proto.fleetcast.v1 import scoring_pb2_grpc as pb_grpc

    correct = 0
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.EdgeScoringStub(channel)  # type: ignore[no-untyped-call]
        for start in range(0, len(x), 16):
            request = pb.PredictRequest(
                name="digits-mlp", inputs=[encode_tensor("input", x[start : start + 16])]
            )
            scores = decode_tensor(stub.Predict(request, timeout=10).outputs[0])
            correct += int((scores.argmax(axis=1) == y[start : start + 16]).sum())
    return correct / len(x)


def _score_each(address: str, x: np.ndarray) -> list[tuple[str, int]]:
    """Score each row of ``x`` in its own call: (prediction id, predicted class) per row."""
    import grpc

    from edge_agent.local_api import decode_tensor, encode_tensor
    from edge_agent.proto.fleetcast.v1 import scoring_pb2 as pb
    from edge_agent.proto.fleetcast.v1 import scoring_pb2_grpc as pb_grpc

    out = []
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.EdgeScoringStub(channel)  # type: ignore[no-untyped-call]
        for i in range(len(x)):
            request = pb.PredictRequest(
                name="digits-mlp", inputs=[encode_tensor("input", x[i : i + 1])]
            )
            answer = stub.Predict(request, timeout=10)
            out.append((answer.prediction_id, int(decode_tensor(answer.outputs[0]).argmax())))
    return out


def _labels_step(
    console: Console,
    agents: list[tuple[str, subprocess.Popen[str], str]],
    x_val: np.ndarray,
    y_val: np.ndarray,
    scored: dict[str, int],
    rows_in: Callable[[str], tuple[int, int]],
    client: ApiClient,
    model: str,
    version: str,
) -> None:
    """Delayed labels: each site scores digits one call each (the field site through a noisy
    sensor), the true labels come back later through POST /feedback, and
    GET /accuracy?group_by=site puts each site's measured accuracy beside its estimate."""
    labels = []
    noise = {"demo-grpc": 0.0, "demo-mqtt": 5.0}
    for device, _, address in agents:
        grain = np.random.default_rng(0).normal(0.0, noise[device], x_val[:LABELLED].shape)
        rows = np.clip(x_val[:LABELLED] + grain, 0, 16).astype(x_val.dtype)
        answers = _score_each(address, rows)
        scored[device] += len(rows)
        labels += [{"prediction_id": pid, "label": int(label)}
                   for (pid, _), label in zip(answers, y_val[:LABELLED], strict=True)]  # fmt: skip
    _wait(lambda: all(rows_in(d)[0] >= scored[d] for d, _, _ in agents), 30)
    fed = client.request("POST", "/api/v1/feedback", body={"labels": labels})
    accuracy = client.request(
        "GET", "/api/v1/accuracy", query={"model": model, "version": version, "group_by": "site"}
    )
    table = Table(title="accuracy per site: measured from the labels, estimated (CBPE) from all")
    for column in ("site", "captures", "labelled", "measured accuracy", "estimated accuracy"):
        table.add_column(column)
    for g in accuracy["groups"]:
        measured = "-" if g["accuracy"] is None else f"{g['accuracy']:.3f}"
        estimate = g["estimated_accuracy"]
        table.add_row(g["group"], str(g["captures"]), str(g["labelled"]), measured,
                      "-" if estimate is None else f"{estimate:.3f}")  # fmt: skip
    console.print(table)
    console.print(
        f"[bold]8. delayed labels[/]: POST /api/v1/feedback joined {fed['matched']} of "
        f"{fed['received']} labels with the captured predictions; GET /api/v1/accuracy?"
        "group_by=site measures each site apart. The noisy sensor of site=field makes the "
        "model confidently wrong: its estimate stays high, the labels (and its drift) tell."
    )


def _monitoring_step(
    console: Console,
    plane: ControlPlane,
    agents: list[tuple[str, subprocess.Popen[str], str]],
    package: Path,
    key_dir: Path,
    x_val: np.ndarray,
    y_val: np.ndarray,
    scored: dict[str, int],
    rows_in: Callable[[str], tuple[int, int]],
    client: ApiClient,
) -> None:
    """Drift on the clean telemetry, then on dimmed digits; the same fleet over REST."""
    from control_plane.demo_monitoring import drift_since, last_seq, print_drift
    from edge_agent.package import load_public_key, open_package

    assert plane.services is not None
    services = plane.services
    manifest = open_package(package, load_public_key(key_dir / PUBLIC_NAME)).manifest
    rows = [(device, "held-out digits", drift_since(services, device, manifest, 0))
            for device, _, _ in agents]  # fmt: skip
    device, _, address = agents[0]
    mark = last_seq(services, device)
    dimmed = (x_val * 0.6).astype(x_val.dtype)
    accuracy = _score(address, dimmed, y_val)
    scored[device] += len(x_val)
    _wait(lambda: rows_in(device)[0] >= scored[device], 30)
    rows.append((device, f"dimmed x0.6 (accuracy {accuracy:.3f})",
                 drift_since(services, device, manifest, mark)))  # fmt: skip
    print_drift(console, rows)
    _labels_step(console, agents, x_val, y_val, scored, rows_in, client,
                 manifest.model_name, manifest.model_version)  # fmt: skip

    base = f"{client.server}/api/v1"
    devices = client.request("GET", "/api/v1/devices")
    audit = client.request("GET", "/api/v1/audit", query={"limit": 100})
    console.print(
        f"[bold]9. operators[/]: GET {base}/devices with an admin token lists "
        f"{', '.join(d['id'] + ' (' + d['status'] + ')' for d in devices['items'])}; "
        f"/audit holds {len(audit['items'])} entries (enrollments, deploys, acks, tokens); "
        f"OpenAPI at {base}/openapi.json"
    )


def _operator_client(plane: ControlPlane, package: Path) -> ApiClient:
    """An admin token (what `fleetcast admin init` makes) and the package's version in the
    catalog, through the REST API as the CLI calls it: `fleetcast models create`, `versions
    register`, `packages add`, `versions stage … compiled`."""
    from control_plane.services.tokens import bootstrap_admin

    assert plane.services is not None
    _, token = bootstrap_admin(plane.services.repos, "demo-admin")
    client = ApiClient(f"http://127.0.0.1:{plane.http_port}", token)
    manifest = read_package(package.read_bytes())[0]
    client.request("POST", "/api/v1/models", body={"name": manifest.model_name, "owner": "demo"})
    register_version(client, package)
    return client


def _rollout_step(
    console: Console,
    client: ApiClient,
    agents: list[tuple[str, subprocess.Popen[str], str]],
    package: Path,
    key_dir: Path,
    x_val: np.ndarray,
    y_val: np.ndarray,
) -> dict[str, Any]:
    """Version 2 in a staged rollout over REST, then the lineage of its package: the
    rollout's final view, the devices the lineage says run its package, its id."""
    from control_plane.demo_rollout import (
        DemoError,
        confirm_running,
        devices_running,
        release_as,
        staged_rollout,
    )

    v2 = release_as(package, "2", key_dir / PRIVATE_NAME, package.parent)
    model, version, package_id = register_version(client, v2)
    devices = [device for device, _, _ in agents]
    view = staged_rollout(console, client, model, version, devices)
    confirm_running(client, model, version, devices)
    console.print(
        f"   GET /api/v1/devices/ID: {', '.join(devices)} report running {model} version {version}"
    )
    # a few digits on version 2 from each agent: its telemetry names the package it ran
    for device, _, address in agents:
        accuracy = _score(address, x_val[:64], y_val[:64])
        if accuracy < 0.5:
            raise DemoError(f"{device} scores {accuracy:.3f} on version {version}: not the model")
    running = devices_running(client, package_id, devices)
    console.print(
        f"[bold]11. lineage[/]: GET /api/v1/lineage?package={package_id}&direction=down: "
        f"runs on {', '.join(running)} (by their telemetry windows)"
    )
    return {"rollout": view, "running": running, "package_id": package_id}


def run_fleet_demo(
    console: Console,
    workdir: Path,
    key_dir: Path,
    package: Path,
    x_val: np.ndarray,
    y_val: np.ndarray,
) -> dict[str, Any]:
    """The fleet steps (5-11); what the rollout and lineage steps found (see _rollout_step)."""
    fleet_dir = workdir / "fleet"
    shutil.rmtree(fleet_dir, ignore_errors=True)
    plane = ControlPlane(
        ServeOptions(
            data_dir=fleet_dir / "control-plane",
            public_key=key_dir / PUBLIC_NAME,
            grpc_address="127.0.0.1:0",
            mqtt=True,
            http_address="127.0.0.1:0",
            rollout_tick_seconds=0.5,
        )
    ).start()
    assert plane.services is not None and plane.mqtt_port is not None
    services = plane.services
    console.print(
        f"[bold]5. control plane[/]: gRPC on 127.0.0.1:{plane.grpc_port}, embedded mosquitto on "
        f"127.0.0.1:{plane.mqtt_port} (per-device logins + ACL), REST API on "
        f"127.0.0.1:{plane.http_port}, SQLite in {fleet_dir}"
    )
    client = _operator_client(plane, package)
    manifest = read_package(package.read_bytes())[0]
    agents: list[tuple[str, subprocess.Popen[str], str]] = []
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        for kind, port, site in (
            ("grpc", plane.grpc_port, "lab"),
            ("mqtt", plane.mqtt_port, "field"),
        ):
            device = f"demo-{kind}"
            state = fleet_dir / device
            token = client.request("POST", "/api/v1/enrollment-tokens", body={"device_id": device})
            subprocess.run(
                _agent_cmd(
                    "enroll",
                    "--server",
                    f"127.0.0.1:{plane.grpc_port}",
                    "--token",
                    token["token"],
                    "--device-id",
                    device,
                    "--state-dir",
                    str(state),
                ),
                check=True,
                capture_output=True,
                text=True,
                env=env,
            )
            # `fleetcast devices set DEVICE --profile … --label demo=fleet --label site=…`
            client.request(
                "PATCH",
                f"/api/v1/devices/{device}",
                body={"profile_id": manifest.profile.id, "labels": {"demo": "fleet", "site": site}},
            )
            proc = subprocess.Popen(
                _agent_cmd(
                    "run",
                    "--state-dir",
                    str(state),
                    "--public-key",
                    str(key_dir / PUBLIC_NAME),
                    "--device-id",
                    device,
                    "--listen",
                    "127.0.0.1:0",
                    "--server",
                    f"{kind}://127.0.0.1:{port}",
                ),
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                env={
                    **env,
                    "FLEETCAST_AGENT_WINDOW_SECONDS": "1",
                    "FLEETCAST_AGENT_SEND_INTERVAL_SECONDS": "0.5",
                    # every prediction captured, so the labels of step 8 join each one
                    "FLEETCAST_AGENT_CAPTURE_RATE": "1",
                    "FLEETCAST_AGENT_MAX_CAPTURES": "500",
                },
            )
            assert proc.stdout is not None
            serving = json.loads(proc.stdout.readline())
            agents.append((device, proc, serving["address"]))
        console.print(f"[bold]6. agents[/]: {', '.join(f'{d} at {a}' for d, _, a in agents)}")

        # `fleetcast deploy MODEL VERSION --selector demo=fleet`: each device gets the package
        # of the version for its profile
        deployed = client.request(
            "POST",
            "/api/v1/deployments",
            body={
                "model": manifest.model_name,
                "version": manifest.model_version,
                "selector": {"demo": "fleet"},
            },
        )
        records = {
            c["device_id"]: services.commands.get(c["command_id"]) for c in deployed["commands"]
        }
        sha = deployed["commands"][0]["sha256"]
        _wait(
            lambda: all(services.commands.get(r.id).status != "pending" for r in records.values()),
            60,
        )
        table = Table(title="rollout and telemetry")
        for column in (
            "device",
            "transport",
            "deploy",
            "rows scored",
            "accuracy",
            "windows stored",
            "rows in windows",
        ):
            table.add_column(column)
        scored: dict[str, int] = {}
        accuracy: dict[str, float] = {}
        for device, _, address in agents:
            accuracy[device] = _score(address, x_val, y_val)
            scored[device] = len(x_val)

        def rows_in(device: str) -> tuple[int, int]:
            windows = services.ingest.all(device, "telemetry_window")
            return sum(json.loads(w.body_json)["rows"] for w in windows), len(windows)

        _wait(lambda: all(rows_in(d)[0] >= scored[d] for d, _, _ in agents), 30)
        for device, _, _ in agents:
            rows, windows = rows_in(device)
            table.add_row(
                device,
                device.removeprefix("demo-"),
                services.commands.get(records[device].id).status,
                str(scored[device]),
                f"{accuracy[device]:.4f}",
                str(windows),
                str(rows),
            )
        console.print(table)
        console.print(
            "[bold]7. telemetry[/]: every device ran the signed package it was sent "
            f"(sha256 {sha[:16]}...), and every scored row came back once in its telemetry."
        )
        _monitoring_step(
            console, plane, agents, package, key_dir, x_val, y_val, scored, rows_in, client
        )
        return _rollout_step(console, client, agents, package, key_dir, x_val, y_val)
    finally:
        for _, proc, _ in agents:
            proc.terminate()
        for _, proc, _ in agents:
            proc.wait(20)
        plane.stop()
