"""`fleetcast serve --http`: the REST API runs on the same app and services as gRPC."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from control_plane.server import ControlPlane, ServeOptions
from control_plane.services.tokens import bootstrap_admin
from tests.integration.transport_support import enroll_device

pytestmark = pytest.mark.integration


@pytest.fixture()
def served(tmp_path: Path, keys: Any) -> Iterator[ControlPlane]:
    plane = ControlPlane(
        ServeOptions(
            data_dir=tmp_path / "cp",
            public_key=keys.public,
            grpc_address="127.0.0.1:0",
            http_address="127.0.0.1:0",
        )
    ).start()
    try:
        yield plane
    finally:
        plane.stop()


def _get(plane: ControlPlane, path: str, token: str | None) -> tuple[int, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{plane.http_port}{path}")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_a_device_enrolled_over_grpc_is_listed_by_the_rest_api(served: ControlPlane) -> None:
    assert served.services is not None and served.http_port
    creds = enroll_device(served, "dev-rest")
    _, admin = bootstrap_admin(served.services.repos)

    status, health = _get(served, "/healthz", None)
    assert status == 200, health
    status, page = _get(served, "/api/v1/devices", admin)
    assert status == 200, page
    assert [d["id"] for d in page["items"]] == ["dev-rest"]

    # the device's own credential opens no operator route, on the served app too
    status, problem = _get(served, "/api/v1/devices", creds["device_token"])
    assert status in (401, 403), problem
    assert problem["status"] == status and problem["detail"]
    status, problem = _get(served, "/api/v1/devices", None)
    assert status == 401 and problem["title"]


def test_revoking_through_the_services_shows_in_the_rest_api(served: ControlPlane) -> None:
    assert served.services is not None
    enroll_device(served, "dev-gone")
    _, admin = bootstrap_admin(served.services.repos)
    served.services.devices.revoke("dev-gone", "op")
    status, device = _get(served, "/api/v1/devices/dev-gone", admin)
    assert status == 200, device
    assert device["status"] == "revoked"
