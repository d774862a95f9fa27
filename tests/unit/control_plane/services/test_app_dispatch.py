"""create_app's container and error mapping; the one path from a store change to transports."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import enroll

from control_plane.app import Fleetcast, create_app, services_of
from control_plane.errors import NotFound
from control_plane.settings import Settings
from control_plane.store.records import Command
from control_plane.transport.changes import ChangeDispatcher
from control_plane.transport.streams import StreamRegistry


def _until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_create_app_holds_the_services_and_maps_errors_to_problem_json(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path / "data"))
    services = services_of(app)
    try:
        assert (tmp_path / "data" / "store.db").exists()
        assert services.packages.public_key is None  # no key yet: serve still starts

        @app.get("/missing")
        def missing() -> str:
            raise NotFound("device 'x' is not enrolled")

        reply = app.test_client().get("/missing")
        assert reply.status_code == 404
        assert reply.mimetype == "application/problem+json"
        assert reply.get_json() == {  # one mapping for the app and the API (api/errors.py)
            "type": "https://fleetcast.dev/problems/not-found",
            "title": "Not found",
            "status": 404,
            "detail": "device 'x' is not enrolled",
            "instance": "/missing",
        }
    finally:
        services.close()


def test_an_old_store_file_is_left_alone_and_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "fleetcast.db").write_bytes(b"old")
    with caplog.at_level(logging.WARNING):
        services = services_of(create_app(Settings(data_dir=data)))
    services.close()
    assert "fleetcast.db is a store of an older fleetcast" in caplog.text
    assert (data / "fleetcast.db").read_bytes() == b"old"


def test_commands_and_revocations_reach_the_transports_through_one_dispatcher(
    services: Fleetcast,
) -> None:
    enroll(services, "dev-a")
    enroll(services, "dev-b")
    services.devices.revoke("dev-b", "op")  # before start: applied by the first pass
    dispatcher = ChangeDispatcher(services.notifier, services.commands, services.devices)
    pending: list[list[Command]] = []
    revoked: list[str] = []
    dispatcher.on_pending.append(pending.append)
    dispatcher.on_revoked.append(revoked.append)
    dispatcher.start()
    try:
        assert revoked == ["dev-b"] and pending == [[]]  # the state at start, applied at once
        cmd = services.commands.send("dev-a", "config", {}, "op")
        assert _until(lambda: [c.id for c in pending[-1]] == [cmd.id])
        services.devices.revoke("dev-a", "op")
        assert _until(lambda: revoked == ["dev-b", "dev-a"])
        services.ingest.ingest("dev-a", [], "grpc")  # no topic: no pass
        passes = dispatcher.passes
        time.sleep(0.2)
        assert dispatcher.passes == passes
    finally:
        dispatcher.stop()


def test_a_failed_pass_keeps_its_topics_and_is_retried(services: Fleetcast) -> None:
    enroll(services, "dev-a")
    dispatcher = ChangeDispatcher(services.notifier, services.commands, services.devices)
    seen: list[list[str]] = []
    failures = [1]

    def flaky(commands: list[Command]) -> None:
        if commands and failures:
            failures.pop()
            raise RuntimeError("broker away")
        seen.append([c.id for c in commands])

    dispatcher.on_pending.append(flaky)
    dispatcher.start()
    try:
        cmd = services.commands.send("dev-a", "config", {}, "op")
        assert _until(lambda: [cmd.id] in seen)
        assert not failures
    finally:
        dispatcher.stop()


def test_stream_registry_wakes_only_the_devices_concerned() -> None:
    registry = StreamRegistry()
    a, b = registry.open("dev-a"), registry.open("dev-b")
    command = Command("c1", "dev-a", 1, "config", {}, "pending", 0.0, None, None)
    registry.deliver([command])
    assert a.wake.is_set() and not b.wake.is_set()
    assert registry.take(a) == [command] and not a.wake.is_set()
    assert registry.take(a) is None
    registry.revoke("dev-b")
    assert b.revoked and b.wake.is_set() and registry.is_revoked("dev-b")
    assert registry.open("dev-b").revoked  # a stream opened later knows too
    registry.close(a)
    registry.deliver([command])  # no stream left for dev-a: nothing to wake, no error
