"""The REST API behind waitress on a loopback port, driven by the `fleetcast` CLI."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result

from control_plane.api import ApiOptions, create_api
from control_plane.api.serve import HttpHandle, serve_http
from control_plane.cli import cli
from control_plane.settings import Settings
from control_plane.store.factory import open_repositories
from control_plane.store.records import NewDevice

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "control_plane" / "api"))
from api_support import fake_runner  # noqa: E402

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Served:
    handle: HttpHandle
    settings: Settings
    store: str
    admin: str
    env: dict[str, str]

    def run(self, *args: str, token: str | None = None) -> Result:
        env = {**self.env, "FLEETCAST_TOKEN": token or self.admin}
        return CliRunner().invoke(cli, [*args], env=env, obj=self.settings, catch_exceptions=False)

    def json_lines(self, *args: str, token: str | None = None) -> list[dict[str, Any]]:
        result = self.run(*args, "--json", token=token)
        assert result.exit_code == 0, result.output
        return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    settings = Settings(data_dir=tmp_path / "data", profiles_dir=ROOT / "hardware-profiles")
    store = f"sqlite:///{tmp_path / 'data' / 'store.db'}"
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "FLEETCAST_STORE": store}
    init = CliRunner().invoke(cli, ["admin", "init"], env=env, obj=settings)
    assert init.exit_code == 0, init.output
    admin = init.stdout.strip()
    assert admin.startswith("fct_")
    again = CliRunner().invoke(cli, ["admin", "init"], env=env, obj=settings)
    assert again.exit_code != 0 and "an admin token exists already" in again.output
    repos = open_repositories(store)
    options = ApiOptions(runner=fake_runner(tmp_path / "packages"), max_upload_bytes=1 << 20)
    handle = serve_http(create_api(repos, settings, options), "127.0.0.1", 0)
    env["FLEETCAST_SERVER"] = handle.url
    try:
        yield Served(handle, settings, store, admin, env)
    finally:
        handle.stop()
        repos.close()


def npz_file(path: Path, rows: int) -> Path:
    np.savez(path, input=np.random.default_rng(rows).random((rows, 64), dtype=np.float32))
    return path


def test_the_cli_manages_the_catalog_over_http(served: Served, tmp_path: Path) -> None:
    assert served.json_lines("whoami") == [{"name": "admin", "role": "admin"}]
    created = served.json_lines("models", "create", "digits", "--owner", "ml")
    assert created[0]["name"] == "digits"
    source = tmp_path / "model.onnx"
    source.write_bytes(b"not really onnx")
    (version,) = served.json_lines(
        "versions", "register", "digits", "1",
        "--source", str(source),
        "--calibration", str(npz_file(tmp_path / "cal.npz", 16)),
        "--validation", str(npz_file(tmp_path / "val.npz", 8)),
        "--intended-use", "digit recognition", "--training-data", "sklearn digits",
        "--owner", "ml", "--metric", "accuracy=0.97",
    )  # fmt: skip
    assert (version["stage"], version["card"]["metrics"]) == ("registered", {"accuracy": 0.97})
    (job,) = served.json_lines(
        "versions", "compile", "digits", "1", "-p", "x86-64-generic", "-p", "raspberry-pi-4"
    )  # waits for the server's worker
    assert job["state"] == "succeeded" and job["progress"] == 1.0
    listed = served.json_lines("packages", "list", "--model", "digits")
    assert sorted(p["profile_id"] for p in listed) == ["raspberry-pi-4", "x86-64-generic"]
    (one,) = served.json_lines("packages", "show", listed[0]["sha256"])
    assert one["manifest"] == {"profile": listed[0]["profile_id"]}  # the fake runner's manifest
    assert served.json_lines("versions", "show", "digits", "1")[0]["stage"] == "compiled"
    for stage in ("staged", "production"):
        served.json_lines("versions", "stage", "digits", "1", stage)
    served.json_lines("versions", "alias", "digits", "production", "1")
    repos = open_repositories(served.store)  # a device of the fleet, as enrollment adds it
    try:
        repos.devices.add(
            NewDevice("cam-1", "0" * 64, labels={"site": "lab"}, profile_id="raspberry-pi-4"),
            at=1.0,
        )
    finally:
        repos.close()
    (sent,) = served.json_lines(
        "versions", "deploy", "digits", "production", "--selector", "site=lab"
    )
    pi = next(p for p in listed if p["profile_id"] == "raspberry-pi-4")
    assert (sent["device_id"], sent["sha256"]) == ("cam-1", pi["sha256"])
    shown = served.json_lines("models", "show", "digits")[0]
    assert shown["aliases"] == {"production": "1"}
    illegal = served.run("versions", "stage", "digits", "1", "registered")
    assert illegal.exit_code != 0 and "production → registered" in illegal.output
    table = served.run("models", "list")
    assert table.exit_code == 0 and "digits" in table.stdout and "ml" in table.stdout
    actions = [e["action"] for e in served.json_lines("audit", "--limit", "100")]
    assert {"model.create", "version.register", "compile_job.create", "package.register",
            "compile_job.finish", "version.stage", "alias.set"} <= set(actions)  # fmt: skip


def test_roles_over_http(served: Served) -> None:
    viewer = served.run("tokens", "create", "dashboard", "--role", "viewer").stdout.strip()
    assert viewer.startswith("fct_")
    assert served.json_lines("whoami", token=viewer) == [{"name": "dashboard", "role": "viewer"}]
    denied = served.run("models", "create", "x", "--owner", "o", token=viewer)
    assert denied.exit_code != 0 and "403" in denied.output and "operator role" in denied.output
    tokens = served.json_lines("tokens", "list")
    assert {t["name"] for t in tokens} == {"admin", "dashboard"}
    dashboard = next(t for t in tokens if t["name"] == "dashboard")
    served.json_lines("tokens", "revoke", dashboard["id"])
    gone = served.run("whoami", token=viewer)
    assert gone.exit_code != 0 and "revoked" in gone.output


def test_login_saves_the_server_and_token_privately(served: Served, tmp_path: Path) -> None:
    env = {k: v for k, v in served.env.items() if k != "FLEETCAST_SERVER"}
    login = CliRunner().invoke(
        cli, ["login", "--server", served.handle.url, "--token", served.admin], env=env
    )
    assert login.exit_code == 0, login.output
    saved = tmp_path / "config" / "fleetcast" / "cli.json"
    assert saved.stat().st_mode & 0o777 == 0o600
    me = CliRunner().invoke(cli, ["whoami", "--json"], env=env, obj=served.settings)
    assert json.loads(me.stdout) == {"name": "admin", "role": "admin"}


def raw(url: str, method: str = "GET", data: bytes | None = None, **headers: str) -> Any:
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as answer:
            return answer.status, answer.headers.get_content_type(), answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get_content_type(), exc.read()


def test_waitress_answers_health_openapi_and_problems(served: Served) -> None:
    base = served.handle.url
    assert raw(base + "/healthz")[0] == 200
    status, _, body = raw(base + "/readyz")
    assert status == 200 and json.loads(body)["status"] == "ready"
    status, _, body = raw(base + "/api/v1/openapi.json")
    assert status == 200 and json.loads(body)["openapi"] == "3.1.0"
    auth = {"Authorization": f"Bearer {served.admin}"}
    status, kind, body = raw(
        base + "/api/v1/uploads", "POST", b"x" * (2 << 20),
        **auth, **{"Content-Type": "application/octet-stream"},
    )  # fmt: skip
    assert (status, kind) == (413, "application/problem+json")
    assert json.loads(body)["status"] == 413
    status, kind, _ = raw(
        base + "/api/v1/models", "POST", b"{oops", **auth, **{"Content-Type": "application/json"}
    )
    assert (status, kind) == (400, "application/problem+json")
    status, kind, _ = raw(base + "/api/v1/models")
    assert (status, kind) == (401, "application/problem+json")


def test_the_store_file_is_shared_with_admin_init(served: Served) -> None:
    """A token made by `admin init` while the server runs works at once (same store)."""
    env = {**served.env}
    extra = CliRunner().invoke(
        cli, ["admin", "init", "--name", "second", "--force", "--json"], env=env,
        obj=served.settings,
    )  # fmt: skip
    assert extra.exit_code == 0, extra.output
    made = json.loads(extra.stdout)
    assert (made["name"], made["role"]) == ("second", "admin")
    assert served.json_lines("whoami", token=made["token"])[0]["name"] == "second"
