"""What a compile produced: the candidates it built and each profile's outcome."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.core.manifest import Benchmark, FidelityReport, FloatNode, Manifest, Signature


@dataclass
class Candidate:
    key: str
    format: str
    recipe: str
    model_bytes: bytes = b""
    signature: Signature | None = None
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    error: str | None = None
    skipped: str | None = None  # not built, and why (mixed precision when int8 already fits)
    latency: dict[int, Benchmark] = field(default_factory=dict)
    float_nodes: tuple[FloatNode, ...] = ()  # mixed precision: nodes kept in float
    trials: list[str] = field(default_factory=list)  # mixed precision: the search's steps

    @property
    def size_bytes(self) -> int:
        return len(self.model_bytes)


@dataclass
class ProfileOutcome:
    profile: str
    rows: list[dict[str, Any]]
    decision: str
    chosen: Candidate | None = None
    fidelity: FidelityReport | None = None
    benchmark: Benchmark | None = None
    manifest: Manifest | None = None
    path: Path | None = None
    package_sha256: str | None = None
    package_bytes: int | None = None

    def summary(self) -> dict[str, Any]:
        """The one JSON object per package that ``fleetcast compile --json`` prints."""
        chosen = self.chosen
        return {
            "path": str(self.path) if self.path else None,
            "profile": self.profile,
            "format": chosen.format if chosen else None,
            "recipe": chosen.recipe if chosen else None,
            "size_bytes": self.package_bytes,
            "model_bytes": chosen.size_bytes if chosen else None,
            "fidelity": self.fidelity.model_dump(mode="json") if self.fidelity else None,
            "latency_ms": self.benchmark.latency_ms_p50 if self.benchmark else None,
            "sha256": self.package_sha256,
            "package_id": self.manifest.package_id if self.manifest else None,
            "release": self.manifest.release if self.manifest else None,
            "decision": self.decision,
            "candidates": self.rows,
        }
