"""The agent's own Prometheus ``/metrics`` (``fleetcast-agent run --metrics 127.0.0.1:9101``).

Served by prometheus-client's built-in HTTP server (pure Python, no dependency, no web
framework). The figures are read from the agent at each scrape (a custom collector): no
counter is kept twice, and a scrape never blocks scoring for longer than a lock read.

- ``fleetcast_agent_info{device,agent_version}`` 1
- ``fleetcast_agent_model_info{model,version,package_id,runtime}`` 1 per loaded model
- ``fleetcast_agent_requests_total{model,version}``, ``fleetcast_agent_failures_total{...}``:
  scoring calls since the model was loaded (failures: runtime errors and rejected input)
- ``fleetcast_agent_latency_p95_ms{model,version}``: from the model's KLL sketch
- ``fleetcast_agent_outbox_messages``, ``fleetcast_agent_outbox_bytes``,
  ``fleetcast_agent_outbox_dropped_total``: telemetry waiting for the control plane
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from edge_agent import __version__
from edge_agent.core.netaddr import split_host_port

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from edge_agent.agent import Agent

logger = logging.getLogger(__name__)


class AgentCollector(Collector):
    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        agent = self.agent
        info = GaugeMetricFamily(
            "fleetcast_agent_info", "This agent", labels=["device", "agent_version"]
        )
        info.add_metric([agent.settings.device_id or "", __version__], 1.0)
        yield info
        models = GaugeMetricFamily(
            "fleetcast_agent_model_info",
            "Models loaded",
            labels=["model", "version", "package_id", "runtime"],
        )
        requests = CounterMetricFamily(
            "fleetcast_agent_requests", "Scoring calls since load", labels=["model", "version"]
        )
        failures = CounterMetricFamily(
            "fleetcast_agent_failures",
            "Failed or rejected scoring calls since load",
            labels=["model", "version"],
        )
        p95 = GaugeMetricFamily(
            "fleetcast_agent_latency_p95_ms", "p95 scoring latency", labels=["model", "version"]
        )
        for name, model in sorted(dict(agent.models).items()):
            m = model.manifest
            labels = [name, m.model_version]
            models.add_metric([*labels, m.package_id, m.runtime], 1.0)
            if model.telemetry is not None:
                health = model.telemetry.health()
                requests.add_metric(labels, float(health.requests))
                failures.add_metric(labels, float(health.failures))
                if health.latency_ms_p95 is not None:
                    p95.add_metric(labels, health.latency_ms_p95)
        yield from (models, requests, failures, p95)
        outbox = getattr(agent, "outbox", None)
        if outbox is not None:
            stats = outbox.stats()
            yield GaugeMetricFamily(
                "fleetcast_agent_outbox_messages", "Messages waiting", value=stats["messages"]
            )
            yield GaugeMetricFamily(
                "fleetcast_agent_outbox_bytes", "Bytes waiting", value=stats["bytes"]
            )
            yield CounterMetricFamily(
                "fleetcast_agent_outbox_dropped", "Messages dropped over quota",
                value=stats["dropped"],
            )  # fmt: skip


def serve_metrics(agent: Agent, address: str) -> tuple[WSGIServer, int]:
    """Serve ``/metrics`` on ``HOST:PORT`` (port 0: any); the server and its bound port."""
    host, port = split_host_port(address)
    registry = CollectorRegistry()
    registry.register(AgentCollector(agent))
    server, _thread = start_http_server(int(port), host, registry)
    bound = int(server.server_address[1])
    logger.info("metrics on http://%s:%d/metrics", host, bound)
    return server, bound
