"""The monitoring step of `fleetcast demo`: drift from the telemetry the agents sent.

Each device's windows are merged (histograms add exactly) and compared with the
reference statistics the compiler put in the package's manifest, with the drift
rule of ``control_plane.core.drift`` (Holm-corrected tests plus a PSI floor).
The demo scores the held-out digits once as they are, and once with every pixel
dimmed, so the table shows a quiet verdict beside a drifted one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from control_plane.app import Fleetcast
from control_plane.core.drift import DriftReport, evaluate
from control_plane.core.sketches import add_histograms, reference_features, window_histograms
from edge_agent.core.manifest import Manifest


def drift_since(
    services: Fleetcast, device: str, manifest: Manifest, after_seq: int
) -> DriftReport:
    """The drift report of ``device``'s telemetry windows with a sequence after ``after_seq``."""
    windows = [
        json.loads(w.body_json)
        for w in services.ingest.all(device, "telemetry_window")
        if w.seq > after_seq
    ]
    current = add_histograms(window_histograms(w) for w in windows)
    return evaluate(reference_features(manifest.reference), current)


def last_seq(services: Fleetcast, device: str) -> int:
    """The newest telemetry window's sequence number from ``device`` (0: none yet)."""
    return max((w.seq for w in services.ingest.all(device, "telemetry_window")), default=0)


def print_drift(console: Console, rows: Sequence[tuple[str, str, DriftReport]]) -> None:
    """One line per (device, data) with the verdict and the figures that decided it."""
    table = Table(title="drift vs the package's reference statistics")
    for column in ("device", "data", "verdict", "features drifted", "max PSI", "top feature"):
        table.add_column(column)
    for device, data, report in rows:
        drifted = sorted(
            (f for f in report.features if f.key in report.drifted), key=lambda f: -f.psi
        )
        table.add_row(
            device,
            data,
            report.status,
            f"{len(report.drifted)} / {report.evaluated}",
            f"{report.max_psi:.3f}",
            f"{drifted[0].label} (PSI {drifted[0].psi:.2f})" if drifted else "-",
        )
    console.print(table)
