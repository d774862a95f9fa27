"""`fleetcast devices token --count`: tokens bound to numbered ids, one JSON line each, minted
through the REST API (`POST /api/v1/enrollment-tokens/batch`) served for real on loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from control_plane.api.factory import ApiOptions, create_api
from control_plane.api.serve import serve_http
from control_plane.app import build_services
from control_plane.cli import DEFAULT_GRPC_WORKERS, cli
from control_plane.settings import Settings
from control_plane.store.factory import open_repositories
from control_plane.transport.grpc_server import DEFAULT_WORKERS

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Settings, dict[str, str]]]:
    settings = Settings(data_dir=tmp_path / "data", profiles_dir=ROOT / "hardware-profiles")
    store = f"sqlite:///{tmp_path / 'data' / 'store.db'}"
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "FLEETCAST_STORE": store}
    init = CliRunner().invoke(cli, ["admin", "init"], env=env, obj=settings)
    assert init.exit_code == 0, init.output
    env["FLEETCAST_TOKEN"] = init.stdout.strip()
    repos = open_repositories(store)
    handle = serve_http(create_api(repos, settings, ApiOptions()), "127.0.0.1", 0)
    env["FLEETCAST_SERVER"] = handle.url
    try:
        yield settings, env
    finally:
        handle.stop()
        repos.close()


def _run(served: tuple[Settings, dict[str, str]], *args: str) -> tuple[int, str]:
    settings, env = served
    answer = CliRunner().invoke(cli, ["devices", "token", *args], env=env, obj=settings)
    return answer.exit_code, answer.output


def test_a_batch_of_tokens_enrolls_its_numbered_devices(
    served: tuple[Settings, dict[str, str]],
) -> None:
    code, output = _run(served, "--device-id", "store-7-", "--count", "3", "--ttl", "1h")
    assert code == 0, output
    minted = [json.loads(line) for line in output.splitlines()]
    assert [m["device_id"] for m in minted] == ["store-7-0000", "store-7-0001", "store-7-0002"]
    repos = open_repositories(served[1]["FLEETCAST_STORE"])
    services = build_services(served[0], repos)
    try:
        for m in minted:
            creds = services.enrollment.enroll(m["token"], m["device_id"], {"os": "linux"})
            assert creds.device_id == m["device_id"]
    finally:
        services.close()


def test_a_batch_needs_a_prefix_and_valid_ids(served: tuple[Settings, dict[str, str]]) -> None:
    code, output = _run(served, "--count", "2")
    assert code != 0 and "--count needs --device-id" in output
    code, output = _run(served, "--device-id", "Store-", "--count", "2")
    assert code != 0 and "lower-case" in output and "Traceback" not in output


def test_the_cli_default_of_grpc_workers_is_the_servers() -> None:
    assert DEFAULT_GRPC_WORKERS == DEFAULT_WORKERS
