"""Lineage over the store: the loop's graph (``core/lineage.py``) built from the catalog,
rollouts, telemetry, captures, feedback, explanations and alerts; queries both ways and an
OpenLineage export.

What each edge comes from:

- dataset -> model version -> package: the package manifests the catalog keeps
  (``lineage.datasets``, profile, recipe, runtime, fidelity);
- package -> rollout -> device: the stored rollouts (each device's package);
- package -> runs_on -> device: each device's **latest telemetry window per model**
  (what it scored with last, as far as telemetry says);
- device -> window -> prediction -> feedback / explanation: the indexed windows and
  captures (added for a prediction query: one prediction's chain, not every window);
- package -> drift_report -> alert: attribution windows (stored by the explanation
  job) and the alert book's alerts of the package's version.

The graph is rebuilt per request from the store (no cached copy to fall out of date);
its size is the catalog's packages, rollouts and devices, not the telemetry.
"""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from control_plane.core.lineage import LineageGraph, Node, node_id
from control_plane.core.rollout_model import Rollout
from control_plane.errors import InvalidInput, NotFound
from control_plane.services import Clock
from control_plane.store.records import MAX_LIMIT, Package, Page
from control_plane.store.repos import Repositories
from edge_agent.core.manifest import Manifest

if TYPE_CHECKING:
    from openlineage.client.event_v2 import RunEvent

AlertsFn = Callable[[], list[Any]]  # AlertService.alerts

DOWN = {
    "trained", "calibrated", "validated", "compiled", "rolled_out_by", "targets", "runs_on",
    "reported", "scored", "captured", "labelled", "explained", "evaluated", "raised",
}  # fmt: skip


def _pages(fetch: Callable[[int], Page[Any]]) -> list[Any]:
    out: list[Any] = []
    offset: int | None = 0
    while offset is not None:
        page = fetch(offset)
        out += page.items
        offset = page.next_offset
    return out


def _view(node: Node) -> dict[str, Any]:
    return {"id": node.id, "kind": node.kind, "attrs": dict(node.attrs)}


class LineageService:
    def __init__(
        self,
        repos: Repositories,
        manifest: Callable[[str], Manifest | None],
        alerts: AlertsFn | None = None,
        clock: Clock = time.time,
    ) -> None:
        self.repos = repos
        self.manifest = manifest
        self.alerts = alerts
        self.clock = clock

    # -- building

    def graph(self, model: str | None = None) -> tuple[LineageGraph, dict[str, str]]:
        """The graph (of one model, or all) and the package id of each catalog sha256."""
        g = LineageGraph()
        ids: dict[str, str] = {}
        packages: list[Package] = _pages(
            lambda o: self.repos.packages.list(model_name=model, limit=MAX_LIMIT, offset=o)
        )
        for package in packages:
            manifest = self.manifest(package.sha256)
            if manifest is None:
                continue
            g.add_package(manifest)
            g.add_node("package", manifest.package_id, sha256=package.sha256)
            ids[package.sha256] = manifest.package_id
        self._rollouts(g, ids, model)
        for device, _model, sha, last in self.repos.insights.running_packages():
            if sha in ids:
                g.set_running(device, ids[sha])
                g.add_node("device", device, last_window_ended_at=last)
        self._reports(g, ids, model)
        return g, ids

    def _rollouts(self, g: LineageGraph, ids: dict[str, str], model: str | None) -> None:
        rows = _pages(lambda o: self.repos.rollouts.list(model=model, limit=MAX_LIMIT, offset=o))
        for row in rows:
            try:
                rollout = Rollout.from_dict(row.state)
            except ValueError:  # a state this code cannot read: left out, not guessed
                continue
            targets: dict[str, list[str]] = {}
            for device, state in rollout.devices.items():
                if state.package in ids:
                    targets.setdefault(ids[state.package], []).append(device)
            for package_id, devices in targets.items():
                g.add_rollout(row.id, package_id, sorted(devices))
            g.add_node("rollout", row.id, phase=row.phase, version=row.version)

    def _reports(self, g: LineageGraph, ids: dict[str, str], model: str | None) -> None:
        by_version: dict[tuple[str, str], list[str]] = {}
        for package_id in sorted(set(ids.values())):
            attrs = g.nodes[node_id("package", package_id)].attrs
            by_version.setdefault((attrs["model"], attrs["version"]), []).append(package_id)
        for model_name, _version in {k for k in by_version if model in (None, k[0])}:
            for w in self.repos.insights.windows(model_name=model_name):
                if w.package_sha256 not in ids:
                    continue
                report = g.add_node(
                    "drift_report",
                    f"attribution:{ids[w.package_sha256]}@{w.window_start:.0f}",
                    signal="attribution",
                    window_start=w.window_start,
                    status=w.drift.get("status"),
                    rows_explained=w.rows_explained,
                )
                g.link(node_id("package", ids[w.package_sha256]), report, "evaluated")
        for alert in self.alerts() if self.alerts is not None else []:
            labels = dict(alert.labels)
            key = (labels.get("model", ""), labels.get("version", ""))
            if key not in by_version:
                continue
            group = labels.get("group", "all")
            report = g.add_node(
                "drift_report", f"{key[0]}@{key[1]}/{group}", signal=alert.rule.metric
            )
            for package_id in by_version[key]:
                g.link(node_id("package", package_id), report, "evaluated")
            g.add_alert(alert.id, report, rule=alert.rule.name, state=alert.state)

    def _add_prediction(self, g: LineageGraph, ids: dict[str, str], prediction_id: str) -> None:
        captures = self.repos.insights.capture(prediction_id)
        if not captures:
            raise NotFound(f"prediction {prediction_id!r} was never captured")
        for c in captures:
            if c.package_sha256 not in ids:
                raise NotFound(
                    f"prediction {prediction_id!r}: the package that scored it is not in the"
                    " catalog (or its window named none)"
                )
            window = g.add_window(c.device_id, c.seq, ids[c.package_sha256])
            g.add_prediction(prediction_id, window)
            g.add_node("prediction", prediction_id, at=c.at, device=c.device_id)
            if self.repos.insights.explanation(prediction_id, c.device_id) is not None:
                g.add_explanation(prediction_id, f"{prediction_id}@{c.device_id}")
        for label in self.repos.monitoring.feedback([prediction_id]):
            g.add_feedback(prediction_id, label.label, label.received_at)

    # -- queries

    def query(
        self,
        *,
        dataset: str | None = None,
        prediction: str | None = None,
        package: str | None = None,
        device: str | None = None,
        direction: str | None = None,
    ) -> dict[str, Any]:
        given = {
            k: v
            for k, v in (
                ("dataset", dataset),
                ("prediction", prediction),
                ("package", package),
                ("device", device),
            )
            if v is not None
        }
        if len(given) != 1:
            raise InvalidInput(
                "lineage: give exactly one of dataset, prediction, package, device"
                f" (got {', '.join(given) or 'none'})"
            )
        g, ids = self.graph()
        if prediction is not None:
            self._add_prediction(g, ids, prediction)
        kind, key = next(iter(given.items()))
        if kind == "package" and key in ids:
            key = ids[key]  # a sha256 names the package too
        start = node_id(kind, key)  # type: ignore[arg-type]
        if start not in g.nodes:
            raise NotFound(f"lineage: no {kind} {key!r} is known")
        chosen = direction or ("down" if kind == "dataset" else "up")
        if chosen not in ("up", "down"):
            raise InvalidInput(f"lineage: direction {chosen!r}: expected up or down")
        nodes = g.walk(start, "up" if chosen == "up" else "down", DOWN)
        answer: dict[str, Any] = {
            "start": _view(g.nodes[start]),
            "direction": chosen,
            "nodes": [_view(n) for n in nodes],
            "edges": self._edges(g, [start, *(n.id for n in nodes)]),
        }
        if kind == "dataset":
            answer["devices_running"] = [_view(n) for n in g.devices_running_from_dataset(key)]
        if kind == "prediction":
            answer["downstream"] = [_view(n) for n in g.walk(start, "down")]
        return answer

    @staticmethod
    def _edges(g: LineageGraph, ids: Iterable[str]) -> list[dict[str, str]]:
        keep = set(ids)
        return sorted(
            (
                {"src": e.src, "dst": e.dst, "relation": e.relation}
                for nid in keep
                for e in g.down.get(nid, set())
                if e.dst in keep
            ),
            key=lambda e: (e["src"], e["dst"], e["relation"]),
        )

    def openlineage(self, model: str | None = None) -> list[dict[str, Any]]:
        """COMPLETE OpenLineage run events (compile, rollout, drift evaluation) as JSON."""
        from control_plane.monitoring.openlineage import to_json

        return [json.loads(to_json(e)) for e in self.run_events(model)]

    def run_events(self, model: str | None = None) -> list[RunEvent]:
        """The graph's OpenLineage run events (openlineage-python models), stamped now."""
        from control_plane.monitoring.openlineage import lineage_events

        g, _ = self.graph(model)
        at = datetime.datetime.fromtimestamp(self.clock(), datetime.UTC).isoformat()
        return lineage_events(g, at)
