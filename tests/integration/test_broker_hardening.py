"""Issue #7, control plane over MQTT: broker logins, message caps, quotas, scope, file modes."""

from __future__ import annotations

import hashlib
import json
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from control_plane.errors import Conflict, InvalidInput
from control_plane.quotas import QuotaLimits
from control_plane.server import ControlPlane, ServeOptions
from control_plane.transport.broker import CONTROL_PLANE_USER, TOPIC_ROOT
from edge_agent.outbox import OutboxMessage
from edge_agent.transport.base import TransportError
from edge_agent.transport.download import Fatal
from edge_agent.transport.grpc import enroll
from edge_agent.transport.mqtt import MqttTransport
from tests.integration.transport_support import HOST, RawMqtt, enroll_device, wait_until

pytestmark = pytest.mark.integration


def _mqtt_device(plane: ControlPlane, device_id: str, creds: dict[str, str], tmp: Path) -> Any:
    assert plane.mqtt_port is not None
    device = MqttTransport(
        "127.0.0.1",
        plane.mqtt_port,
        device_id,
        creds["mqtt_password"],
        tmp / device_id,
        username=creds["mqtt_username"],
    )
    assert device.connected.wait(10)
    return device


def _item(device: str, seq: int, pad: int = 0) -> dict[str, Any]:
    body = {"device_id": device, "sequence": seq, "pad": "x" * pad}
    return {"seq": seq, "kind": "status", "body_json": json.dumps(body)}


# ------------------------------------------------------------------ broker login takeover


def test_a_device_cannot_take_over_the_control_planes_broker_login(
    plane: ControlPlane, tmp_path: Path
) -> None:
    assert plane.services is not None and plane.broker is not None
    target = f"127.0.0.1:{plane.grpc_port}"
    before = {line.split(":")[0]: line for line in plane.broker.passwd.read_text().splitlines()}

    with pytest.raises(InvalidInput, match="'fleetcast-control-plane' is reserved"):
        plane.services.enrollment.create_token("op", CONTROL_PLANE_USER)
    unbound = plane.services.enrollment.create_token("op")
    with pytest.raises(TransportError, match="INVALID_ARGUMENT: device id 'fleetcast-control"):
        enroll(target, unbound, CONTROL_PLANE_USER, HOST)

    # an ordinary device's login lives in its own namespace and never touches the CP's
    creds = enroll_device(plane, "dev-a")
    assert creds["mqtt_username"] == "devices/dev-a"
    after = {line.split(":")[0]: line for line in plane.broker.passwd.read_text().splitlines()}
    assert after[CONTROL_PLANE_USER] == before[CONTROL_PLANE_USER]
    intruder = RawMqtt(plane.broker.port, CONTROL_PLANE_USER, creds["mqtt_password"], "x")
    assert intruder.connect_result is not None and intruder.connect_result.is_failure
    intruder.close()

    # the control plane's own MQTT login still works: its commands reach the device
    device = _mqtt_device(plane, "dev-a", creds, tmp_path)
    try:
        record = plane.services.commands.send("dev-a", "config", {"window_seconds": 5}, "op")
        commands: list[Any] = []
        assert wait_until(lambda: commands.extend(device.poll_commands(0.2)) or commands)
        assert commands[0].id == record.id
    finally:
        device.close()


def test_ids_colliding_with_a_broker_login_are_refused(plane: ControlPlane) -> None:
    assert plane.services is not None and plane.broker is not None
    # a login left in the password file (an operator's, or a device whose removal failed)
    plane.broker._passwd("-b", str(plane.broker.passwd), "devices/dev-stale", "old-password")
    with pytest.raises(Conflict, match="broker already has a login 'devices/dev-stale'"):
        plane.services.enrollment.create_token("op", "dev-stale")
    unbound = plane.services.enrollment.create_token("op")
    with pytest.raises(TransportError, match="ALREADY_EXISTS: .*already has a login"):
        enroll(f"127.0.0.1:{plane.grpc_port}", unbound, "dev-stale", HOST)
    line = next(x for x in plane.broker.passwd.read_text().splitlines() if "dev-stale" in x)
    with pytest.raises(Conflict):  # add_device never replaces an existing login
        plane.broker.add_device("dev-stale", "new-password")
    assert line in plane.broker.passwd.read_text().splitlines()
    # the unbound token was not spent on the refusal
    assert enroll(f"127.0.0.1:{plane.grpc_port}", unbound, "dev-fine", HOST)["device_id"]


def test_reconcile_after_a_restart_tolerates_an_already_removed_login(
    tmp_path: Path, keys: Any
) -> None:
    options = ServeOptions(
        data_dir=tmp_path / "cp", public_key=keys.public, grpc_address="127.0.0.1:0", mqtt=True
    )
    first = ControlPlane(options).start()
    try:
        assert first.services is not None
        enroll_device(first, "dev-a")
        first.services.devices.revoke("dev-a", "op")  # removes the login
    finally:
        first.stop()
    second = ControlPlane(options).start()
    try:
        assert second.broker is not None
        assert "devices/dev-a" not in second.broker.logins()
        assert second.dispatcher is not None  # a fresh start re-reads every revoked device
        second.dispatcher.apply(frozenset({"*"}))  # removing it again is done, not an error
        second.broker.remove_device("dev-a")
        assert second.broker.running
    finally:
        second.stop()


# ------------------------------------------------------------------ caps and quotas on MQTT


def test_a_huge_mqtt_message_is_not_stored(plane: ControlPlane) -> None:
    assert plane.services is not None and plane.mqtt_port is not None
    creds = enroll_device(plane, "dev-a")
    device = RawMqtt(plane.mqtt_port, creds["mqtt_username"], creds["mqtt_password"], "big")
    try:
        huge = json.dumps({"items": [_item("dev-a", 1, pad=int(19.5 * 1024 * 1024))]})
        device.client.publish(f"{TOPIC_ROOT}/dev-a/telemetry", huge, qos=1)
        assert device.disconnected.wait(20)  # the broker refuses the packet and the sender
    finally:
        device.close()
    # the same device, within the cap, still gets through: nothing of the big one is stored
    again = RawMqtt(plane.mqtt_port, creds["mqtt_username"], creds["mqtt_password"], "small")
    try:
        again.publish(f"{TOPIC_ROOT}/dev-a/telemetry", json.dumps({"items": [_item("dev-a", 2)]}))
        assert wait_until(lambda: [u.seq for u in plane.services.ingest.all()] == [2])  # type: ignore[union-attr]
    finally:
        again.close()
    conf = plane.broker.conf.read_text()  # type: ignore[union-attr]
    assert "max_packet_size" in conf


def test_mqtt_uploads_over_quota_are_refused_counted_and_resent(
    plane: ControlPlane, tmp_path: Path
) -> None:
    assert plane.services is not None
    creds = enroll_device(plane, "dev-a")
    now = [0.0]
    plane.services.ingest.quota.limits = QuotaLimits(
        bytes_per_second=100, burst_bytes=400, items_per_second=1, burst_items=50
    )
    plane.services.ingest.quota.clock = lambda: now[0]
    device = _mqtt_device(plane, "dev-a", creds, tmp_path)
    msgs = [
        OutboxMessage(i, "status", {"device_id": "dev-a", "sequence": i, "pad": "x" * 150}, 1)
        for i in (1, 2, 3, 4)
    ]
    try:
        assert sorted(device.send(msgs[:2])) == [1, 2]
        with pytest.raises(TransportError, match="over its upload quota"):
            device.send(msgs[2:])
        assert [u.seq for u in plane.services.ingest.all()] == [1, 2]
        assert plane.services.devices.list().items[0].uploads_refused == 1
        now[0] += 10
        assert sorted(device.send(msgs[2:])) == [3, 4]
        assert [u.seq for u in plane.services.ingest.all()] == [1, 2, 3, 4]
    finally:
        device.close()


def test_mqtt_block_requests_are_scoped_to_the_device(
    plane: ControlPlane, package: Path, tmp_path: Path
) -> None:
    assert plane.services is not None
    a = enroll_device(plane, "dev-a")
    b = enroll_device(plane, "dev-b")
    sha = hashlib.sha256(package.read_bytes()).hexdigest()
    plane.services.commands.send("dev-a", "deploy", {"sha256": sha}, "op")
    thief = _mqtt_device(plane, "dev-b", b, tmp_path)
    owner = _mqtt_device(plane, "dev-a", a, tmp_path)
    try:
        with pytest.raises(Fatal, match="never deployed to device 'dev-b'"):
            thief.fetch_package(sha)
        assert owner.fetch_package(sha) == package.read_bytes()
    finally:
        thief.close()
        owner.close()


# ------------------------------------------------------------------ private files


def test_data_files_are_private(plane: ControlPlane) -> None:
    assert plane.broker is not None
    enroll_device(plane, "dev-a")
    time.sleep(0.1)
    data_dir = plane.options.data_dir

    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    assert mode(data_dir) == 0o700
    assert mode(plane.broker.directory) == 0o700
    for path in [data_dir / "store.db", *data_dir.glob("store.db-*")]:
        assert mode(path) == 0o600, path
    for path in plane.broker.directory.iterdir():  # passwd, acl, conf, log, CP secret
        assert mode(path) == 0o600, path
