"""``create_api(repos, settings)``: the REST API (``/api/v1``) as a Flask app.

The app factory of the whole control plane (``control_plane/app.py``) calls
this once with the store it opened, then adds its own routes to the app it
gets back; ``serve_http`` (``api/serve.py``) serves it with waitress.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify, request
from flask_openapi3.blueprint import APIBlueprint
from flask_openapi3.models.info import Info
from flask_openapi3.openapi import OpenAPI

from control_plane.api import (
    admin,
    alert_rules,
    artifacts,
    catalog,
    deployments,
    devices_read,
    function_aliases,
    insights,
    keys,
    monitoring,
    rollouts,
)
from control_plane.api.auth import install_auth
from control_plane.api.context import EXTENSION, ApiContext
from control_plane.api.errors import Problem, problem, register_error_handlers, validation_problem
from control_plane.api.metrics import SCRAPE_HOOKS, install_metrics
from control_plane.api.openapi import problem_document
from control_plane.api.schemas import Health
from control_plane.app import Fleetcast, build_services
from control_plane.errors import InvalidInput
from control_plane.monitoring.metrics import MonitoringMetrics
from control_plane.services.alerts import AlertService, Notifications, WaveDrift
from control_plane.services.audit import AuditService
from control_plane.services.blobs import BlobStore
from control_plane.services.catalog import CatalogService
from control_plane.services.compile_jobs import CompileJobService, CompileWorker, Runner
from control_plane.services.deployments import DeploymentService
from control_plane.services.explanations import ExplainService, ExplainWorker, package_loader
from control_plane.services.function_aliases import FunctionAliasService
from control_plane.services.lineage import LineageService
from control_plane.services.monitoring import MonitoringService
from control_plane.services.retirement import RetirementRollback
from control_plane.services.rollouts import AlertDrift, RolloutService
from control_plane.services.tokens import TokenService
from control_plane.settings import Settings
from control_plane.store.repos import Repositories

logger = logging.getLogger(__name__)

JSON_TYPES = frozenset({"application/json", "application/merge-patch+json"})


@dataclass(frozen=True)
class ApiOptions:
    """Limits and the compile runner (None: the real pipeline)."""

    max_json_bytes: int = 1 << 20
    max_upload_bytes: int = 256 << 20
    runner: Runner | None = None
    worker_name: str | None = None
    alert_webhooks: tuple[str, ...] = ()  # http(s) URLs alerts are POSTed to
    alert_notifications: Notifications | None = None  # webhooks, e-mail, retries (wins)
    explain_interval: float = 60.0  # s between background explanation ticks (0: none)


def _known_profiles(profiles_dir: Sequence[Path]) -> Callable[[], Sequence[str]]:
    def known() -> Sequence[str]:
        from control_plane.core.hardware import load_profiles

        return sorted(load_profiles(profiles_dir))

    return known


def build_context(
    repos: Repositories,
    settings: Settings,
    options: ApiOptions,
    fleet: Fleetcast | None = None,
) -> ApiContext:
    """The API's services; those the transports share (devices, enrollment, commands,
    packages, keys) are ``fleet``'s when ``fleetcast serve`` passes its container."""
    audit = AuditService(repos.audit)
    cat = CatalogService(
        repos, audit, BlobStore(settings.data_dir / "uploads"), settings.data_dir / "versions"
    )
    jobs = CompileJobService(repos, cat, audit, _known_profiles(settings.profile_dirs()))
    runner = options.runner
    if runner is None:
        from control_plane.services.compile_runner import pipeline_runner

        runner = pipeline_runner(settings)
    monitoring = MonitoringService(repos, audit)
    alerts = AlertService(
        monitoring,
        notifications=options.alert_notifications or Notifications(webhooks=options.alert_webhooks),
        audit=audit,
    )
    explanations = ExplainService(
        repos, monitoring.manifest, package_loader(_public_key_path(settings))
    )
    fleet = fleet or build_services(settings, repos)
    rollouts = RolloutService(
        repos, audit, fleet.commands, drift=WaveDrift(alerts), drift_alerts=AlertDrift(alerts)
    )
    cat.roll_back = RetirementRollback(repos, rollouts, fleet.commands)
    return ApiContext(
        repos=repos,
        audit=audit,
        tokens=TokenService(repos, audit),
        catalog=cat,
        jobs=jobs,
        deployments=DeploymentService(repos, audit, send=fleet.commands.send),
        rollouts=rollouts,
        worker=CompileWorker(jobs, runner, options.worker_name),
        max_upload_bytes=options.max_upload_bytes,
        monitoring=monitoring,
        alerts=alerts,
        explanations=explanations,
        lineage=LineageService(repos, monitoring.manifest, alerts.alerts),
        explain_worker=ExplainWorker(explanations, options.explain_interval),
        function_aliases=FunctionAliasService(repos, audit),
        keys=fleet.keys,
        devices=fleet.devices,
        enrollment=fleet.enrollment,
        packages=fleet.packages,
    )


def _public_key_path(settings: Settings) -> Path:
    from control_plane.signing import PUBLIC_NAME

    return settings.public_key or settings.key_dir / PUBLIC_NAME


health = APIBlueprint("health", __name__)


@health.get("/healthz", responses={200: Health})
def healthz() -> dict[str, Any]:
    """The process answers."""
    return {"status": "ok"}


@health.get("/readyz", responses={200: Health})
def readyz() -> Response | dict[str, Any]:
    """The store answers (503 problem when it does not)."""
    from control_plane.api.context import api_context

    try:
        version = api_context().repos.schema_version()
    except Exception as exc:  # a probe: any failure to reach the store means not ready
        logger.warning("readyz: %s", exc)
        return problem(503, f"the store is not reachable: {exc}")
    return {"status": "ready", "schema_version": version}


def _reject_malformed_json() -> None:
    """A JSON body that does not parse is a 400 naming where, before any view sees it."""
    if request.method not in ("POST", "PUT", "PATCH") or request.mimetype not in JSON_TYPES:
        return
    data = request.get_data(cache=True)
    if not data:
        return
    try:
        json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"the request body is not valid JSON: {exc}") from exc


BLUEPRINTS = (
    catalog.bp,
    artifacts.uploads,
    artifacts.packages,
    artifacts.compile_jobs,
    admin.tokens,
    admin.audit,
    keys.bp,
    devices_read.bp,
    deployments.bp,
    monitoring.bp,
    insights.bp,
    rollouts.bp,
    function_aliases.bp,
    alert_rules.bp,
)


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route here, written by flask-openapi3 from the views."""
    spec = OpenAPI(
        __name__,
        info=Info(title="Fleetcast control plane", version="1"),
        security_schemes={"bearer": {"type": "http", "scheme": "bearer"}},
        validation_error_status=422,
        validation_error_model=Problem,
        doc_ui=False,
    )  # only collects the paths: requests are served by the app register_api was given
    for blueprint in (health, *BLUEPRINTS):
        spec.register_api(blueprint)
    return problem_document(spec.api_doc)


def register_api(
    app: Flask,
    repos: Repositories,
    settings: Settings,
    options: ApiOptions | None = None,
    fleet: Fleetcast | None = None,
) -> ApiContext:
    """Add ``/api/v1``, ``/healthz``, ``/readyz`` and the error mapping to ``app``.

    The compile worker is built (``context.worker``) but not started: the process
    that serves starts it (``serve_http`` does).
    """
    options = options or ApiOptions()
    context = build_context(repos, settings, options, fleet)
    app.extensions[EXTENSION] = context
    app.config["MAX_CONTENT_LENGTH"] = options.max_json_bytes
    registry = install_metrics(app)  # first: its timer starts before auth, sees every answer
    context.monitoring.metrics = MonitoringMetrics(registry)  # drift scores, ingest counts
    app.extensions[SCRAPE_HOOKS].append(context.monitoring.refresh_metrics)
    app.extensions[SCRAPE_HOOKS].append(context.alerts.refresh_metrics)
    app.validation_error_callback = validation_problem  # type: ignore[attr-defined]
    for blueprint in (health, *BLUEPRINTS):
        app.register_blueprint(blueprint)
    install_auth(app, frozenset(bp.name for bp in BLUEPRINTS))  # 401/403 before anything else
    app.before_request(_reject_malformed_json)
    register_error_handlers(app)
    document = openapi_document()

    @app.get("/api/v1/openapi.json", endpoint="openapi_json")
    def openapi_json() -> Response:
        return jsonify(document)

    return context


def create_api(repos: Repositories, settings: Settings, options: ApiOptions | None = None) -> Flask:
    """A Flask app serving only the REST API (tests, and processes without transports)."""
    app = Flask("control_plane.api")
    register_api(app, repos, settings, options)
    return app
