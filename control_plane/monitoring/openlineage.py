"""OpenLineage run events from the lineage graph, built with the openlineage-python models.

Each producing step becomes one COMPLETE run event (the client's attrs models
check run ids, event times and URLs as they are built):

- compile: inputs the datasets the model version was trained/calibrated on
  (``datasetVersion`` facet = the dataset's sha256), output the package;
  run tags carry profile, recipe, runtime and the fidelity verdict.
- rollout: input the package, outputs the targeted devices/functions.
- drift evaluation: inputs the telemetry windows, output the drift report.

Run ids are UUIDv5 of the graph node id, so exporting twice gives the same
events (a consumer such as Marquez deduplicates them).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import (
    DatasetFacet,
    RunFacet,
    dataset_version_dataset,
    documentation_job,
    job_type_job,
    tags_run,
)
from openlineage.client.serde import Serde

from control_plane.core.lineage import LineageGraph, Node

PRODUCER = "https://github.com/fleetcast/fleetcast/tree/main/control_plane"
NAMESPACE = "fleetcast"


def run_id(node: Node) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"fleetcast:{node.id}"))


def _job(name: str, kind: str, description: str) -> Job:
    return Job(
        namespace=NAMESPACE,
        name=name,
        facets={
            "jobType": job_type_job.JobTypeJobFacet(
                processingType="BATCH", integration="FLEETCAST", jobType=kind, producer=PRODUCER
            ),
            "documentation": documentation_job.DocumentationJobFacet(
                description=description, producer=PRODUCER
            ),
        },
    )


def _tags(node: Node) -> dict[str, RunFacet]:
    fields = [
        tags_run.TagsRunFacetFields(key=k, value=str(v), source="FLEETCAST")
        for k, v in sorted(node.attrs.items())
    ]
    return {"tags": tags_run.TagsRunFacet(tags=fields, producer=PRODUCER)}


def _dataset_name(node: Node) -> str:
    kind, key = node.id.split(":", 1)
    return f"{kind}s/{key}" if kind != "dataset" else f"datasets/{node.attrs.get('name', key)}"


def _input(node: Node) -> InputDataset:
    facets: dict[str, DatasetFacet] = {}
    if node.kind == "dataset":
        sha = node.id.split(":", 1)[1]
        facets["version"] = dataset_version_dataset.DatasetVersionDatasetFacet(
            datasetVersion=sha, producer=PRODUCER
        )
    return InputDataset(namespace=NAMESPACE, name=_dataset_name(node), facets=facets)


def _output(node: Node) -> OutputDataset:
    return OutputDataset(namespace=NAMESPACE, name=_dataset_name(node))


def _event(
    node: Node, job: Job, inputs: Iterable[Node], outputs: Iterable[Node], at: str
) -> RunEvent:
    return RunEvent(
        eventType=RunState.COMPLETE,
        eventTime=at,
        producer=PRODUCER,
        run=Run(runId=run_id(node), facets=_tags(node)),
        job=job,
        inputs=[_input(n) for n in inputs],
        outputs=[_output(n) for n in outputs],
    )


def lineage_events(graph: LineageGraph, event_time: str) -> list[RunEvent]:
    """COMPLETE run events for every compile, rollout and drift evaluation in the graph."""
    events = []
    for node in sorted(graph.nodes.values(), key=lambda n: n.id):
        if node.kind == "package":
            versions = graph.walk(node.id, "up", {"compiled"})
            upstream = graph.walk(node.id, "up", {"compiled", "trained", "calibrated", "validated"})
            datasets = [n for n in upstream if n.kind == "dataset"]
            model = versions[0].attrs.get("model", "model") if versions else "model"
            job = _job(f"compile.{model}", "COMPILE", "fleetcast compile: model -> signed package")
            events.append(_event(node, job, datasets, [node], event_time))
        elif node.kind == "rollout":
            packages = graph.walk(node.id, "up", {"rolled_out_by"})
            targets = graph.walk(node.id, "down", {"targets"})
            job = _job(f"rollout.{node.id.split(':', 1)[1]}", "ROLLOUT", "fleetcast rollout")
            events.append(_event(node, job, packages, targets, event_time))
        elif node.kind == "drift_report":
            windows = graph.walk(node.id, "up", {"evaluated"})
            job = _job("drift", "DRIFT", "fleetcast drift evaluation of telemetry windows")
            events.append(_event(node, job, windows, [node], event_time))
    return events


def to_json(event: RunEvent) -> str:
    """The event as OpenLineage JSON (the client's own serializer)."""
    return Serde.to_json(event)
