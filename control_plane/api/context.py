"""What the API's views reach through ``app.extensions``: the services, built once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import current_app, request

from control_plane.services.alerts import AlertService
from control_plane.services.audit import AuditService
from control_plane.services.catalog import CatalogService
from control_plane.services.compile_jobs import CompileJobService, CompileWorker
from control_plane.services.deployments import DeploymentService
from control_plane.services.devices import DeviceService
from control_plane.services.enrollment import EnrollmentService
from control_plane.services.explanations import ExplainService, ExplainWorker
from control_plane.services.function_aliases import FunctionAliasService
from control_plane.services.keys import KeyService
from control_plane.services.lineage import LineageService
from control_plane.services.monitoring import MonitoringService
from control_plane.services.packages import PackageService
from control_plane.services.rollouts import RolloutService
from control_plane.services.tokens import TokenService
from control_plane.store.records import Page
from control_plane.store.repos import Repositories

EXTENSION = "fleetcast.api"


@dataclass
class ApiContext:
    repos: Repositories
    audit: AuditService
    tokens: TokenService
    catalog: CatalogService
    jobs: CompileJobService
    deployments: DeploymentService
    rollouts: RolloutService
    worker: CompileWorker | None
    max_upload_bytes: int
    monitoring: MonitoringService
    alerts: AlertService
    explanations: ExplainService
    lineage: LineageService
    function_aliases: FunctionAliasService
    keys: KeyService
    devices: DeviceService
    enrollment: EnrollmentService
    packages: PackageService
    explain_worker: ExplainWorker | None = None


def api_context() -> ApiContext:
    context: ApiContext = current_app.extensions[EXTENSION]
    return context


def paged(page: Page[Any], items: list[Any]) -> dict[str, Any]:
    """A list response: the items and a ``next`` link keeping the request's filters."""
    if page.next_offset is None:
        return {"items": items, "next": None, "next_offset": None}
    args = request.args.to_dict()
    args["offset"] = str(page.next_offset)
    query = "&".join(f"{k}={_quote(v)}" for k, v in args.items())
    return {"items": items, "next": f"{request.path}?{query}", "next_offset": page.next_offset}


def _quote(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")
