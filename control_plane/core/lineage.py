"""Lineage of the loop as a graph, with queries both ways (no I/O).

Nodes are ``kind:key`` ids; edges run downstream with a relation name::

    dataset --trained/calibrated/validated--> model_version --compiled--> package
    package --rolled_out_by--> rollout --targets--> device | function
    package --runs_on--> device | function          (what is installed now)
    device --reported--> window <--scored-- package
    window --captured--> prediction --labelled--> feedback
    prediction --explained--> explanation
    window --evaluated--> drift_report --raised--> alert

Queries: :meth:`LineageGraph.devices_running_from_dataset` (which devices run
packages built from dataset X) and :meth:`LineageGraph.provenance` (what
produced the package that scored prediction Y). Export as OpenLineage events
is in :mod:`control_plane.monitoring.openlineage`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from edge_agent.core.manifest import Manifest

Kind = Literal[
    "dataset", "model_version", "package", "rollout", "device", "function", "window",
    "prediction", "feedback", "explanation", "drift_report", "alert",
]  # fmt: skip
Direction = Literal["up", "down"]

_DATASET_RELATION = {
    "calibration": "calibrated",
    "validation": "validated",
    "reference": "trained",
    "labels": "trained",
}


@dataclass(frozen=True)
class Node:
    id: str
    kind: Kind
    attrs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    relation: str


def node_id(kind: Kind, key: str) -> str:
    return f"{kind}:{key}"


@dataclass
class LineageGraph:
    nodes: dict[str, Node] = field(default_factory=dict)
    down: dict[str, set[Edge]] = field(default_factory=dict)
    up: dict[str, set[Edge]] = field(default_factory=dict)

    # --- building ---------------------------------------------------------------------

    def add_node(self, kind: Kind, key: str, **attrs: Any) -> str:
        nid = node_id(kind, key)
        old = self.nodes.get(nid)
        merged = {**(old.attrs if old else {}), **attrs}
        self.nodes[nid] = Node(nid, kind, merged)
        return nid

    def link(self, src: str, dst: str, relation: str) -> None:
        for nid in (src, dst):
            if nid not in self.nodes:
                raise KeyError(f"unknown lineage node {nid}")
        edge = Edge(src, dst, relation)
        self.down.setdefault(src, set()).add(edge)
        self.up.setdefault(dst, set()).add(edge)

    def unlink(self, edge: Edge) -> None:
        self.down.get(edge.src, set()).discard(edge)
        self.up.get(edge.dst, set()).discard(edge)

    def add_package(self, manifest: Manifest) -> str:
        """A package with the model version and datasets its manifest names."""
        version = self.add_node(
            "model_version",
            f"{manifest.model_name}@{manifest.model_version}",
            model=manifest.model_name,
            version=manifest.model_version,
            source_sha256=manifest.lineage.source_sha256,
        )
        for ref in manifest.lineage.datasets:
            ds = self.add_node("dataset", ref.sha256, name=ref.name, rows=ref.rows)
            self.link(ds, version, _DATASET_RELATION[ref.role])
        package = self.add_node(
            "package",
            manifest.package_id,
            model=manifest.model_name,
            version=manifest.model_version,
            profile=manifest.profile.id,
            recipe=manifest.recipe,
            runtime=manifest.runtime,
            fidelity_passed=manifest.fidelity.passed,
            max_abs_error=manifest.fidelity.max_abs_error,
            compiler_version=manifest.lineage.compiler_version,
            created_at=manifest.lineage.created_at,
        )
        self.link(version, package, "compiled")
        return package

    def add_rollout(self, rollout_id: str, package_id: str, targets: Iterable[str]) -> str:
        rollout = self.add_node("rollout", rollout_id)
        self.link(node_id("package", package_id), rollout, "rolled_out_by")
        for target in targets:
            self.link(rollout, self.add_node("device", target), "targets")
        return rollout

    def set_running(self, target: str, package_id: str, kind: Kind = "device") -> None:
        """``target`` now runs ``package_id``: the edge from its previous package of the same
        model is removed (a device running several models keeps the others)."""
        tid = self.add_node(kind, target)
        model = self.nodes[node_id("package", package_id)].attrs.get("model")
        for edge in [e for e in self.up.get(tid, set()) if e.relation == "runs_on"]:
            if self.nodes[edge.src].attrs.get("model") == model:
                self.unlink(edge)
        self.link(node_id("package", package_id), tid, "runs_on")

    def add_window(self, device_id: str, sequence: int, package_id: str) -> str:
        window = self.add_node("window", f"{device_id}/{sequence}", package=package_id)
        self.link(self.add_node("device", device_id), window, "reported")
        self.link(node_id("package", package_id), window, "scored")
        return window

    def add_prediction(self, prediction_id: str, window: str) -> str:
        prediction = self.add_node("prediction", prediction_id)
        self.link(window, prediction, "captured")
        return prediction

    def add_feedback(self, prediction_id: str, label: float, received_at: float) -> str:
        fb = self.add_node("feedback", prediction_id, label=label, received_at=received_at)
        self.link(node_id("prediction", prediction_id), fb, "labelled")
        return fb

    def add_explanation(self, prediction_id: str, explanation_id: str) -> str:
        ex = self.add_node("explanation", explanation_id)
        self.link(node_id("prediction", prediction_id), ex, "explained")
        return ex

    def add_drift_report(self, report_id: str, windows: Iterable[str], **attrs: Any) -> str:
        report = self.add_node("drift_report", report_id, **attrs)
        for window in windows:
            self.link(window, report, "evaluated")
        return report

    def add_alert(self, alert_id: str, source: str, **attrs: Any) -> str:
        alert = self.add_node("alert", alert_id, **attrs)
        self.link(source, alert, "raised")
        return alert

    # --- queries ----------------------------------------------------------------------

    def walk(
        self, start: str, direction: Direction, relations: Iterable[str] | None = None
    ) -> list[Node]:
        """Every node reachable from ``start`` (breadth first), following only ``relations``."""
        allowed = set(relations) if relations is not None else None
        edges = self.down if direction == "down" else self.up
        seen, queue, out = {start}, deque([start]), []
        while queue:
            for edge in sorted(edges.get(queue.popleft(), set()), key=lambda e: (e.src, e.dst)):
                if allowed is not None and edge.relation not in allowed:
                    continue
                nxt = edge.dst if direction == "down" else edge.src
                if nxt not in seen:
                    seen.add(nxt)
                    queue.append(nxt)
                    out.append(self.nodes[nxt])
        return out

    def devices_running_from_dataset(self, dataset_sha256: str) -> list[Node]:
        """Devices and functions that run, now, a package built from this dataset."""
        start = node_id("dataset", dataset_sha256)
        if start not in self.nodes:
            raise KeyError(start)
        relations = {"trained", "calibrated", "validated", "compiled", "runs_on"}
        return [n for n in self.walk(start, "down", relations) if n.kind in ("device", "function")]

    def provenance(self, prediction_id: str) -> dict[str, list[Node]]:
        """What produced the package that scored a prediction: package, model version, datasets."""
        start = node_id("prediction", prediction_id)
        if start not in self.nodes:
            raise KeyError(start)
        upstream = self.walk(start, "up", {"captured", "scored", "compiled", "trained",
                                           "calibrated", "validated", "reported"})  # fmt: skip
        out: dict[str, list[Node]] = {}
        for node in upstream:
            out.setdefault(node.kind, []).append(node)
        return out
