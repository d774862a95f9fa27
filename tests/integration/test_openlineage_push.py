"""OpenLineage run events pushed to a real HTTP endpoint (the spec's HTTP transport, as
Marquez serves it): each event once per content, a change sent again, a refusal or an
unreachable endpoint retried at the next push, and `serve --openlineage-url` on its timer."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from control_plane.core.lineage import LineageGraph
from control_plane.monitoring.openlineage import OpenLineagePusher, lineage_events, to_json
from control_plane.store.records import Package
from edge_agent.core.manifest import DatasetRef
from tests.unit.control_plane.monitoring_support import monitored_manifest

pytestmark = pytest.mark.integration

TRAIN = DatasetRef(role="reference", name="digits-train", sha256="a" * 64, rows=1000)


@dataclass
class Endpoint:
    url: str = ""
    paths: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    refuse: int = 0  # answer 503 to this many requests


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    state = Endpoint()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.paths.append(self.path)
            if state.refuse > 0:
                state.refuse -= 1
                self.send_response(503)
            else:
                state.events.append(body)
                self.send_response(201)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()
    server.server_close()


def _graph() -> tuple[LineageGraph, str]:
    rng = np.random.default_rng(0)
    g = LineageGraph()
    package = g.add_package(
        monitored_manifest(rng.normal(size=(300, 4)), rng.random((300, 3)), datasets=(TRAIN,))
    )
    return g, package.split(":", 1)[1]


def test_each_event_is_pushed_once_per_content_and_a_refusal_is_retried(
    endpoint: Endpoint,
) -> None:
    g, package = _graph()
    g.add_rollout("r-1", package, ["d1"])
    stamp = ["2026-11-30T08:00:00+00:00"]
    pusher = OpenLineagePusher(lambda: lineage_events(g, stamp[0]), endpoint.url)

    first = pusher.push()
    assert (first.sent, first.unchanged, first.failed, first.error) == (2, 0, 0, None)
    assert set(endpoint.paths) == {"/api/v1/lineage"}
    expected = [json.loads(to_json(e)) for e in lineage_events(g, stamp[0])]
    assert endpoint.events == expected  # the client's own serialization, as the API serves
    assert {e["job"]["name"] for e in endpoint.events} == {"compile.digits", "rollout.r-1"}

    stamp[0] = "2026-11-30T09:00:00+00:00"  # a later push stamps them anew: nothing changed
    again = pusher.push()
    assert (again.sent, again.unchanged, again.failed) == (0, 2, 0) and len(endpoint.events) == 2

    g.add_rollout("r-1", package, ["d1", "d2"])  # the rollout reached another device
    endpoint.refuse = 1
    refused = pusher.push()
    assert (refused.sent, refused.unchanged, refused.failed) == (0, 1, 1)
    assert refused.error is not None and "503" in refused.error
    retried = pusher.push()
    assert (retried.sent, retried.unchanged, retried.failed) == (1, 1, 0)
    (rollout,) = [e for e in endpoint.events[2:]]
    assert rollout["job"]["name"] == "rollout.r-1"
    assert {o["name"] for o in rollout["outputs"]} == {"devices/d1", "devices/d2"}
    assert rollout["run"]["runId"] == endpoint.events[1]["run"]["runId"]  # the same run


def test_an_unreachable_endpoint_is_reported_not_raised() -> None:
    g, _ = _graph()
    pusher = OpenLineagePusher(lambda: lineage_events(g, "2026-11-30T08:00:00+00:00"),
                               "http://127.0.0.1:9", timeout=2.0)  # fmt: skip
    result = pusher.push()
    assert (result.sent, result.failed) == (0, 1)
    assert result.error is not None and "Connection" in result.error


def test_serve_pushes_the_catalog_lineage_on_its_timer(tmp_path: Path, endpoint: Endpoint) -> None:
    from control_plane.server import ControlPlane, ServeOptions

    plane = ControlPlane(
        ServeOptions(
            data_dir=tmp_path,
            grpc_address="127.0.0.1:0",
            store=str(tmp_path / "store.db"),
            rollout_tick_seconds=0,
            alert_interval_s=0,
            openlineage_url=endpoint.url,
            openlineage_interval_s=0.2,
        )
    ).start()
    try:
        assert plane.services is not None
        rng = np.random.default_rng(0)
        manifest = monitored_manifest(
            rng.normal(size=(300, 4)), rng.random((300, 3)), datasets=(TRAIN,)
        )
        plane.services.repos.packages.put(
            Package("e" * 64, manifest.package_id, "digits", "1", manifest.profile.id, 1, 1,
                    "/p", manifest.model_dump(mode="json"), 1.0)
        )  # fmt: skip
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline and not endpoint.events:
            time.sleep(0.1)
        (event,) = endpoint.events
        assert event["job"]["name"] == "compile.digits" and event["eventType"] == "COMPLETE"
        assert [o["name"] for o in event["outputs"]] == [f"packages/{manifest.package_id}"]
        assert [i["name"] for i in event["inputs"]] == ["datasets/digits-train"]
        time.sleep(0.6)  # more pushes: nothing changed, nothing sent again
        assert len(endpoint.events) == 1
    finally:
        plane.stop()
