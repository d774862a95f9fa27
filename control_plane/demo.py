"""`fleetcast demo`: the main job on embedded defaults, end to end on this machine.

Trains two small real models on scikit-learn's digits, compiles each into a
signed package per hardware profile, verifies every package as a device
would, and scores the held-out digits through the on-device runtime.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from control_plane.compiler.pipeline import CompileRequest, compile_model
from control_plane.compiler.report import ProfileOutcome
from control_plane.core.hardware import load_profiles
from control_plane.demo_fleet import run_fleet_demo
from control_plane.settings import Settings
from control_plane.signing import PRIVATE_NAME, PUBLIC_NAME, generate_keypair
from edge_agent.host import detect_host
from edge_agent.runtime import open_model


def run_demo(settings: Settings, workdir: Path) -> None:
    import torch

    from control_plane.examples import digits

    console = Console()
    if not console.is_terminal:  # logs and CI: wide enough for the table
        console = Console(width=120)
    workdir.mkdir(parents=True, exist_ok=True)
    key_dir = workdir / "keys"
    if not (key_dir / PRIVATE_NAME).exists():
        generate_keypair(key_dir)
    console.print(f"[bold]1. keys[/]: ed25519 pair in {key_dir}")

    split = digits.load_split()
    profiles = load_profiles(settings.profile_dirs())
    host = detect_host()
    runnable = [p for p in profiles.values() if not p.host_mismatches(host)]
    fleet_package: Path | None = None
    fleet_x = split.x_validation
    table = Table(title="packages (held-out digits scored through edge_agent.runtime)")
    for column in ("model", "profile", "package", "size", "top-1 agree", "accuracy", "p50 ms"):
        table.add_column(column)

    for kind in ("mlp", "cnn"):
        images = kind == "cnn"
        model = digits.mlp() if kind == "mlp" else digits.cnn()
        start = time.perf_counter()
        x_train = split.images(split.x_train) if images else split.x_train
        digits.train(model, x_train, split.y_train, epochs=20 if images else 40)
        x_val = split.images(split.x_validation) if images else split.x_validation
        fp32_accuracy = digits.accuracy(model, x_val, split.y_validation)
        console.print(
            f"[bold]2. trained digits-{kind}[/] in {time.perf_counter() - start:.1f} s: "
            f"fp32 accuracy {fp32_accuracy:.4f} on {len(x_val)} held-out digits"
        )
        data = digits.write_dataset(workdir / kind, split, images=images)
        state = workdir / kind / f"{kind}.pt"
        torch.save(model.state_dict(), state)
        selected = list(profiles.values()) if kind == "mlp" else runnable
        request = CompileRequest(
            model=state,
            factory=f"control_plane.examples.digits:{kind}",
            calibration=data["calibration"],
            validation=data["validation"],
            labels=data["labels"],
            profiles=selected,
            out_dir=workdir / "packages",
            signing_key=key_dir / PRIVATE_NAME,
            model_name=f"digits-{kind}",
            model_version="1",
            created_by="fleetcast-demo",
        )
        start = time.perf_counter()
        with console.status(f"compiling digits-{kind} for {len(selected)} profiles") as status:
            outcomes = compile_model(request, lambda message: status.update(message))
        console.print(
            f"[bold]3. compiled digits-{kind}[/] for {len(outcomes)} profiles in "
            f"{time.perf_counter() - start:.1f} s"
        )
        for outcome in outcomes:
            _add_row(table, kind, outcome, key_dir / PUBLIC_NAME, x_val, split.y_validation, host)
            if kind == "mlp" and outcome.profile == "x86-64-generic":
                fleet_package, fleet_x = outcome.path, x_val
    console.print(table)
    console.print(
        "[bold]4. every package verified[/] (sha256 + ed25519 signature); those whose profile "
        "fits this host were loaded and scored on-device. Packages: "
        f"{workdir / 'packages'}\n   Inspect one: fleetcast inspect "
        f"{workdir / 'packages' / 'digits-mlp-1-x86-64-generic-r1.fcpkg'}"
    )
    assert fleet_package is not None
    run_fleet_demo(console, workdir, key_dir, fleet_package, fleet_x, split.y_validation)


def _add_row(
    table: Table,
    kind: str,
    outcome: ProfileOutcome,
    public_key: Path,
    x_val: np.ndarray,
    y_val: np.ndarray,
    host: object,
) -> None:
    assert outcome.path is not None and outcome.manifest is not None
    manifest = outcome.manifest
    model = open_model(outcome.path, public_key)  # verifies hash and signature
    scores = model.predict({"input": x_val})["output"]
    accuracy = float((scores.argmax(axis=1) == y_val).mean())
    fidelity = manifest.fidelity
    table.add_row(
        f"digits-{kind}",
        outcome.profile,
        f"{manifest.format}/{manifest.recipe}",
        f"{outcome.package_bytes:,} B",
        f"{fidelity.top1_agreement:.4f}" if fidelity.top1_agreement is not None else "-",
        f"{accuracy:.4f}",
        f"{manifest.benchmark.latency_ms_p50:.3f}" if manifest.benchmark else "not here",
    )
