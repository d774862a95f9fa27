"""`fleetcast devices token --count`: tokens bound to numbered ids, one JSON line each."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from control_plane.app import build_services
from control_plane.cli import DEFAULT_GRPC_WORKERS, cli
from control_plane.settings import Settings
from control_plane.transport.grpc_server import DEFAULT_WORKERS


def _run(settings: Settings, *args: str) -> tuple[int, str]:
    answer = CliRunner().invoke(cli, ["devices", "token", *args], obj=settings)
    return answer.exit_code, answer.output


def test_a_batch_of_tokens_enrolls_its_numbered_devices(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    code, output = _run(settings, "--device-id", "store-7-", "--count", "3", "--ttl", "1h")
    assert code == 0, output
    minted = [json.loads(line) for line in output.splitlines()]
    assert [m["device_id"] for m in minted] == ["store-7-0000", "store-7-0001", "store-7-0002"]
    services = build_services(settings)
    try:
        for m in minted:
            creds = services.enrollment.enroll(m["token"], m["device_id"], {"os": "linux"})
            assert creds.device_id == m["device_id"]
    finally:
        services.close()


def test_a_batch_needs_a_prefix_and_valid_ids(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    code, output = _run(settings, "--count", "2")
    assert code != 0 and "--count needs --device-id" in output
    code, output = _run(settings, "--device-id", "Store-", "--count", "2")
    assert code != 0 and "lower-case" in output and "Traceback" not in output


def test_the_cli_default_of_grpc_workers_is_the_servers() -> None:
    assert DEFAULT_GRPC_WORKERS == DEFAULT_WORKERS
