"""Prometheus ``/metrics`` for the API: requests by route, method and status, and latency.

The registry is the app's own (``app.extensions["fleetcast.metrics"]``), so
two apps in one process (tests, replicas) never share counters; other parts of
the control plane may register their collectors on it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from flask import Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest

EXTENSION = "fleetcast.metrics"
SCRAPE_HOOKS = "fleetcast.metrics.before_scrape"  # callables run before each scrape


def install_metrics(app: Flask) -> CollectorRegistry:
    registry = CollectorRegistry()
    requests = Counter(
        "fleetcast_api_requests",
        "HTTP requests answered, by route template, method and status.",
        ["route", "method", "status"],
        registry=registry,
    )
    latency = Histogram(
        "fleetcast_api_request_seconds",
        "Time to answer an HTTP request, by route template and method.",
        ["route", "method"],
        registry=registry,
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    )

    hooks: list[Callable[[], None]] = []

    @app.before_request
    def start_timer() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def count(response: Response) -> Response:
        route = request.url_rule.rule if request.url_rule is not None else "(no route)"
        requests.labels(route, request.method, str(response.status_code)).inc()
        started = g.get("metrics_started")
        if started is not None:
            latency.labels(route, request.method).observe(time.perf_counter() - started)
        return response

    @app.get("/metrics", endpoint="metrics")
    def metrics() -> Response:
        for hook in hooks:
            hook()
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)

    app.extensions[EXTENSION] = registry
    app.extensions[SCRAPE_HOOKS] = hooks
    return registry
