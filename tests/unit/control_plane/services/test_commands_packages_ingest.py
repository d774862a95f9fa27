"""Commands, packages and ingest on the in-memory store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Clock, enroll

from control_plane.app import Fleetcast
from control_plane.errors import InvalidInput, NotFound, ResourceExhausted
from control_plane.quotas import QuotaLimits


def test_commands_get_execution_versions_and_are_acked_once(services: Fleetcast) -> None:
    enroll(services, "dev-a")
    first = services.commands.send("dev-a", "config", {"window_seconds": 5}, "op")
    second = services.commands.send("dev-a", "capture", {"rate": 0.1}, "op")
    assert [first.execution_version, second.execution_version] == [1, 2]
    assert [c.id for c in services.commands.pending("dev-a")] == [first.id, second.id]
    acked = services.commands.ack("dev-a", first.id, True, {"error": ""})
    assert acked.status == "ok"
    again = services.commands.ack("dev-a", first.id, False, {"error": "late"})
    assert (again.status, again.result) == ("ok", {"error": ""})
    assert [c.id for c in services.commands.pending()] == [second.id]
    (entry, _) = services.repos.audit.list(subject="dev-a", action="command.capture").items + [None]
    assert entry is not None and entry.after == {"command_id": second.id, "execution_version": 2}


def test_bad_commands_are_refused_naming_why(services: Fleetcast) -> None:
    enroll(services, "dev-a")
    with pytest.raises(InvalidInput, match="command kind 'reboot'"):
        services.commands.send("dev-a", "reboot", {}, "op")
    with pytest.raises(NotFound, match="not in the catalog"):
        services.commands.send("dev-a", "deploy", {"sha256": "e" * 64}, "op")
    with pytest.raises(NotFound, match="not enrolled"):
        services.commands.send("dev-x", "config", {}, "op")
    other = enroll(services, "dev-b")
    assert other
    cmd = services.commands.send("dev-a", "config", {}, "op")
    with pytest.raises(NotFound, match="is not for device 'dev-b'"):
        services.commands.ack("dev-b", cmd.id, True, {})


def test_revoked_devices_have_no_pending_commands(services: Fleetcast) -> None:
    enroll(services, "dev-a")
    services.commands.send("dev-a", "config", {}, "op")
    services.devices.revoke("dev-a", "op")
    assert services.commands.pending() == []


def test_a_package_is_verified_registered_and_downloadable_only_where_deployed(
    services: Fleetcast, package_file: Path
) -> None:
    package = services.packages.register(package_file, "op")
    assert Path(package.path).read_bytes() == package_file.read_bytes()
    assert services.packages.register(package_file, "op") == package  # content-addressed
    assert package.manifest["model_name"] == "synthetic"
    enroll(services, "dev-a")
    enroll(services, "dev-b")
    cmd = services.commands.send("dev-a", "deploy", {"sha256": package.sha256}, "op")
    assert (cmd.body["package_id"], cmd.body["size_bytes"]) == (
        package.package_id,
        package.size_bytes,
    )
    assert services.packages.path_for_device("dev-a", package.sha256) == Path(package.path)
    with pytest.raises(NotFound, match="never deployed to device 'dev-b'"):
        services.packages.path_for_device("dev-b", package.sha256)
    # a deploy body that only mentions the hash elsewhere grants nothing
    services.repos.commands.add("dev-b", "deploy", {"sha256": "0" * 64, "x": package.sha256}, 1.0)
    with pytest.raises(NotFound, match="never deployed"):
        services.packages.path_for_device("dev-b", package.sha256)
    with pytest.raises(NotFound, match="not in the catalog"):
        services.packages.path_for_device("dev-a", "f" * 64)


def test_a_tampered_or_unsigned_package_is_refused(
    services: Fleetcast, package_file: Path, tmp_path: Path
) -> None:
    tampered = tmp_path / "tampered.fcpkg"
    data = bytearray(package_file.read_bytes())
    data[-30] ^= 0xFF
    tampered.write_bytes(bytes(data))
    with pytest.raises(InvalidInput, match="tampered.fcpkg"):
        services.packages.register(tampered, "op")
    services.packages.public_key = None
    with pytest.raises(InvalidInput, match="fleetcast keys generate"):
        services.packages.register(package_file, "op")
    assert services.packages.list().items == []


def _item(device_id: str, seq: int, **extra: object) -> tuple[int, str, str]:
    return seq, "status", json.dumps({"device_id": device_id, "sequence": seq, **extra})


def test_uploads_are_stored_exactly_once_and_bad_items_rejected(services: Fleetcast) -> None:
    enroll(services, "dev-a")
    result = services.ingest.ingest(
        "dev-a",
        [
            _item("dev-a", 1),
            _item("dev-b", 2),  # names another device
            (3, "status", "{not json"),
            (4, "secrets", "{}"),
            (0, "status", "{}"),
            _item("dev-a", 5),
        ],
        "grpc",
    )
    assert (result.acked, result.rejected) == ([1, 5], [2, 3, 4, 0])
    assert "not the sender 'dev-a'" in result.errors[0]
    resent = services.ingest.ingest("dev-a", [_item("dev-a", 1), _item("dev-a", 6)], "mqtt")
    assert resent.acked == [1, 6]  # acked again, stored once
    stored = services.ingest.all("dev-a")
    assert [(u.seq, u.transport) for u in stored] == [(1, "grpc"), (5, "grpc"), (6, "mqtt")]


def test_uploads_over_quota_are_refused_whole_and_counted(
    services: Fleetcast, clock: Clock
) -> None:
    enroll(services, "dev-a")
    now = [0.0]
    services.ingest.quota.limits = QuotaLimits(
        bytes_per_second=10, burst_bytes=100, items_per_second=1, burst_items=3
    )
    services.ingest.quota.clock = lambda: now[0]
    assert services.ingest.ingest("dev-a", [_item("dev-a", 1)], "grpc").acked == [1]
    with pytest.raises(ResourceExhausted, match="over its upload"):
        services.ingest.ingest("dev-a", [_item("dev-a", i) for i in (2, 3, 4)], "grpc")
    assert [u.seq for u in services.ingest.all()] == [1]
    assert services.devices.get("dev-a").uploads_refused == 1
    now[0] += 60
    assert services.ingest.ingest("dev-a", [_item("dev-a", 2)], "grpc").acked == [2]
