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

:class:`OpenLineagePusher` sends them to an OpenLineage HTTP endpoint (Marquez's
``/api/v1/lineage`` or any consumer of the spec's HTTP transport) with the client's
``HttpTransport``: an event is sent again only when its run's inputs, outputs or tags
changed (a rollout reaching more devices), and an event the endpoint refused is
retried at the next push.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

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
from openlineage.client.transport.http import HttpConfig, HttpTransport

from control_plane.core.lineage import LineageGraph, Node

logger = logging.getLogger(__name__)

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


def fingerprint(event: RunEvent) -> str:
    """What the event says apart from when it was stamped: its run, job, inputs, outputs."""
    body = Serde.to_json(
        RunEvent(
            eventType=event.eventType, eventTime="1970-01-01T00:00:00+00:00",
            producer=event.producer, run=event.run, job=event.job,
            inputs=event.inputs, outputs=event.outputs,
        )
    )  # fmt: skip
    return hashlib.sha256(body.encode()).hexdigest()


@dataclass(frozen=True)
class PushResult:
    sent: int  # events the endpoint accepted
    unchanged: int  # events already sent with the same content
    failed: int  # events refused or unreachable: sent again at the next push
    error: str | None = None  # the first failure


class OpenLineagePusher:
    """Sends the run events to an OpenLineage HTTP endpoint, each once per content.

    What was sent is remembered in this process (run id -> fingerprint): after a
    restart every event is sent once more, which consumers take as the same run (the
    run ids are stable). The first failure of a push stops it (the endpoint is most
    likely down); the rest go at the next push.
    """

    def __init__(
        self,
        events: Callable[[], list[RunEvent]],
        url: str,
        endpoint: str = "api/v1/lineage",
        timeout: float = 5.0,
    ) -> None:
        config = HttpConfig(url=url, endpoint=endpoint, timeout=timeout, retry={"total": 0})
        self._transport = HttpTransport(config)
        self._events = events
        self._sent: dict[str, str] = {}
        self.url = url

    def push(self, now: float | None = None) -> PushResult:
        """Send what changed since the last push (``now`` is the timer's, unused)."""
        due = [(e, fingerprint(e)) for e in self._events()]
        changed = [(e, key) for e, key in due if self._sent.get(e.run.runId) != key]
        for sent, (event, key) in enumerate(changed):
            try:
                self._transport.emit(event)
            except Exception as exc:  # requests' errors, an HTTP error status: next push
                error = f"{type(exc).__name__}: {exc}"
                logger.warning("OpenLineage push to %s: %s", self.url, error)
                return PushResult(sent, len(due) - len(changed), len(changed) - sent, error)
            self._sent[event.run.runId] = key
        return PushResult(len(changed), len(due) - len(changed), 0)
