"""gRPC and MQTT between a real control plane and devices: auth, isolation, delivery."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from control_plane.errors import NotFound
from control_plane.server import ControlPlane, ServeOptions
from control_plane.transport.broker import TOPIC_ROOT
from control_plane.transport.grpc_server import TlsConfig
from edge_agent.outbox import OutboxMessage
from edge_agent.proto.fleetcast.v1 import agent_pb2, agent_pb2_grpc
from edge_agent.transport.base import TransportError
from edge_agent.transport.download import Fatal
from edge_agent.transport.grpc import GrpcTls, GrpcTransport
from edge_agent.transport.mqtt import MqttTransport
from tests.integration.transport_support import RawMqtt, enroll_device, make_certs, wait_until

pytestmark = pytest.mark.integration


def _msg(msg_id: int, device: str, seq: int, kind: str = "status") -> OutboxMessage:
    return OutboxMessage(msg_id, kind, {"device_id": device, "sequence": seq, "event": "t"}, 1)


# ------------------------------------------------------------------ enrollment and auth


def test_enrollment_token_is_one_time_and_bound(plane: ControlPlane) -> None:
    assert plane.services is not None
    creds = enroll_device(plane, "dev-a")
    assert creds["device_id"] == "dev-a" and creds["device_token"].startswith("dev-a.")
    token = plane.services.enrollment.create_token("op", "dev-b")
    from edge_agent.transport.grpc import enroll

    target = f"127.0.0.1:{plane.grpc_port}"
    with pytest.raises(
        TransportError, match="UNAUTHENTICATED: enrollment token is for device 'dev-b'"
    ):
        enroll(target, token, "dev-c", {"os": "linux"})
    enroll(target, token, "dev-b", {"os": "linux"})
    with pytest.raises(
        TransportError, match="UNAUTHENTICATED: enrollment token is unknown or already used"
    ):
        enroll(target, token, "dev-b", {"os": "linux"})
    with pytest.raises(TransportError, match="INVALID_ARGUMENT: device id 'Bad Id!'"):
        enroll(target, plane.services.enrollment.create_token("op"), "Bad Id!", {"os": "linux"})


def test_grpc_calls_need_the_device_credential(plane: ControlPlane, tmp_path: Path) -> None:
    creds = enroll_device(plane, "dev-a")
    target = f"127.0.0.1:{plane.grpc_port}"
    with grpc.insecure_channel(target) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        request = agent_pb2.UploadRequest(items=[])
        with pytest.raises(grpc.RpcError) as info:
            stub.UploadTelemetry(request, timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as info:
            stub.UploadTelemetry(request, metadata=(("authorization", "Bearer dev-a.forged"),))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED

    # a device cannot act as another: the body naming dev-b is rejected, dev-a's own is stored
    transport = GrpcTransport(target, creds["device_token"], tmp_path / "dl")
    try:
        acked = transport.send([_msg(1, "dev-a", 1), _msg(2, "dev-b", 2)])
        assert sorted(acked) == [1, 2]  # both answered: one stored, one rejected for good
        assert plane.services is not None
        stored = plane.services.ingest.all()
        assert [(u.device_id, u.seq) for u in stored] == [("dev-a", 1)]
    finally:
        transport.close()


def test_revoking_cuts_a_device_off_both_transports(plane: ControlPlane, tmp_path: Path) -> None:
    assert plane.services is not None and plane.mqtt_port is not None
    creds = enroll_device(plane, "dev-a")
    grpc_transport = GrpcTransport(f"127.0.0.1:{plane.grpc_port}", creds["device_token"], tmp_path)
    mqtt_device = RawMqtt(plane.mqtt_port, "devices/dev-a", creds["mqtt_password"], "dev-a-raw")
    try:
        assert mqtt_device.connected.is_set()
        assert grpc_transport.send([_msg(1, "dev-a", 1)]) == [1]
        plane.services.devices.revoke("dev-a", "test-operator")
        with pytest.raises(TransportError, match="UNAUTHENTICATED: device 'dev-a' is revoked"):
            grpc_transport.send([_msg(2, "dev-a", 2)])
        # mosquitto re-checks logins on SIGHUP and drops the revoked device
        assert mqtt_device.disconnected.wait(10)
        again = RawMqtt(plane.mqtt_port, "devices/dev-a", creds["mqtt_password"], "dev-a-again")
        assert again.connect_result is not None and again.connect_result.is_failure
        again.close()
    finally:
        grpc_transport.close()
        mqtt_device.close()


# ------------------------------------------------------------------ MQTT isolation


def test_mqtt_devices_touch_only_their_own_topics(plane: ControlPlane, package: Path) -> None:
    assert plane.services is not None and plane.mqtt_port is not None
    a = enroll_device(plane, "dev-a")
    enroll_device(plane, "dev-b")
    anonymous = RawMqtt(plane.mqtt_port, None, None, "anon")
    assert anonymous.connect_result is not None and anonymous.connect_result.is_failure
    anonymous.close()
    wrong = RawMqtt(plane.mqtt_port, "devices/dev-a", "not-the-password", "dev-a-wrong")
    assert wrong.connect_result.is_failure
    wrong.close()

    intruder = RawMqtt(plane.mqtt_port, "devices/dev-a", a["mqtt_password"], "dev-a-intruder")
    try:
        assert intruder.connected.is_set()
        (own,) = intruder.subscribe(f"{TOPIC_ROOT}/dev-a/commands")
        assert not own.is_failure
        # mosquitto may grant these subscriptions; its ACL is applied on every delivery
        intruder.subscribe(f"{TOPIC_ROOT}/dev-b/commands")
        intruder.subscribe(f"{TOPIC_ROOT}/#")
        sha = hashlib.sha256(package.read_bytes()).hexdigest()
        plane.services.commands.send("dev-b", "deploy", {"sha256": sha}, "test-operator")
        plane.services.commands.send("dev-a", "config", {"window_seconds": 10}, "test-operator")
        assert wait_until(
            lambda: any(m.topic.endswith("dev-a/commands") for m in intruder.messages)
        )
        time.sleep(0.5)
        assert not any("dev-b" in m.topic for m in intruder.messages)

        # publishing as dev-b: the broker drops it, nothing reaches the control plane
        forged = {
            "items": [
                {
                    "seq": 1,
                    "kind": "status",
                    "body_json": json.dumps({"device_id": "dev-b", "sequence": 1}),
                }
            ]
        }
        intruder.publish(f"{TOPIC_ROOT}/dev-b/telemetry", json.dumps(forged))
        own_item = {
            "items": [
                {
                    "seq": 1,
                    "kind": "status",
                    "body_json": json.dumps({"device_id": "dev-a", "sequence": 1}),
                }
            ]
        }
        intruder.publish(f"{TOPIC_ROOT}/dev-a/telemetry", json.dumps(own_item))
        assert wait_until(lambda: len(plane.services.ingest.all("dev-a")) == 1)  # type: ignore[union-attr]
        time.sleep(0.3)
        assert plane.services.ingest.all("dev-b") == []
    finally:
        intruder.close()


# ------------------------------------------------------------------ commands and packages


@pytest.mark.parametrize("kind", ["grpc", "mqtt"])
def test_commands_acks_and_downloads(
    plane: ControlPlane, package: Path, tmp_path: Path, kind: str
) -> None:
    assert plane.services is not None and plane.mqtt_port is not None
    creds = enroll_device(plane, "dev-a")
    transport: Any
    if kind == "grpc":
        transport = GrpcTransport(
            f"127.0.0.1:{plane.grpc_port}",
            creds["device_token"],
            tmp_path / "dl",
            chunk_size=16 * 1024,
        )
    else:
        transport = MqttTransport(
            "127.0.0.1", plane.mqtt_port, "dev-a", creds["mqtt_password"], tmp_path / "dl"
        )
        assert transport.connected.wait(10)
    try:
        sha = hashlib.sha256(package.read_bytes()).hexdigest()
        record = plane.services.commands.send("dev-a", "deploy", {"sha256": sha}, "test-operator")
        commands = []
        assert wait_until(lambda: commands.extend(transport.poll_commands(0.2)) or commands)
        command = commands[0]
        assert (command.id, command.type, command.execution_version) == (record.id, "deploy", 1)
        assert command.body["sha256"] == sha
        assert transport.fetch_package(sha) == package.read_bytes()
        transport.ack(command, True, detail={"installed": "digits-mlp-1-x86-64-generic-r1"})
        assert wait_until(lambda: plane.services.commands.get(record.id).status == "ok")  # type: ignore[union-attr]
        transport.ack(command, False, error="late duplicate")  # a second ack changes nothing
        time.sleep(0.3)
        assert plane.services.commands.get(record.id).status == "ok"

        with pytest.raises(NotFound, match="not in the catalog"):
            plane.services.commands.send("dev-a", "deploy", {"sha256": "0" * 64}, "test-operator")
        with pytest.raises(Fatal, match="not in the catalog"):
            transport.fetch_package("f" * 64)
    finally:
        transport.close()


@pytest.fixture()
def paced_download(monkeypatch: pytest.MonkeyPatch) -> None:
    """Slow the device's reading to one block per 50 ms, so a cut lands mid-transfer."""
    import edge_agent.transport.download as download

    original = download._pull

    def paced_pull(blocks: Any, path: Path, offset: int) -> bool:
        def paced() -> Any:
            for block in blocks:
                yield block
                time.sleep(0.05)

        return original(paced(), path, offset)

    monkeypatch.setattr(download, "_pull", paced_pull)


@pytest.mark.usefixtures("paced_download")
def test_grpc_download_resumes_after_server_restart(
    plane: ControlPlane, package: Path, tmp_path: Path
) -> None:
    assert plane.services is not None and plane.servicer is not None
    creds = enroll_device(plane, "dev-a")
    chunk = 8 * 1024
    data = package.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    chunks_in_file = -(-len(data) // chunk)
    plane.services.commands.send("dev-a", "deploy", {"sha256": sha}, "test-operator")
    transport = GrpcTransport(
        f"127.0.0.1:{plane.grpc_port}", creds["device_token"], tmp_path / "dl", chunk_size=chunk
    )
    part = tmp_path / "dl" / f"{sha}.part"
    cut = threading.Event()

    def cutter() -> None:
        wait_until(lambda: part.exists() and part.stat().st_size >= len(data) // 2, 30)
        plane.restart_grpc()  # a real server restart, mid-transfer
        cut.set()

    thread = threading.Thread(target=cutter)
    thread.start()
    try:
        assert transport.fetch_package(sha) == data
    finally:
        thread.join(30)
        transport.close()
    assert cut.is_set()
    sent = plane.servicer.transfers.by_package[sha]
    assert chunks_in_file <= sent <= chunks_in_file + 1, (sent, chunks_in_file)
    assert not part.exists()


@pytest.mark.usefixtures("paced_download")
def test_mqtt_download_resumes_after_broker_restart(
    plane: ControlPlane, package: Path, tmp_path: Path
) -> None:
    assert plane.services is not None and plane.broker is not None and plane.bridge is not None
    creds = enroll_device(plane, "dev-a")
    data = package.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    plane.services.commands.send("dev-a", "deploy", {"sha256": sha}, "test-operator")
    transport = MqttTransport(
        "127.0.0.1", plane.broker.port, "dev-a", creds["mqtt_password"], tmp_path / "dl"
    )
    assert transport.connected.wait(10)
    import edge_agent.transport.mqtt as device_mqtt

    block = 8 * 1024  # small blocks so the package takes several
    blocks_in_file = -(-len(data) // block)
    part = tmp_path / "dl" / f"{sha}.part"
    old_block = device_mqtt.MAX_BLOCK
    device_mqtt.MAX_BLOCK = block
    restarted = threading.Event()

    def cutter() -> None:
        wait_until(lambda: part.exists() and part.stat().st_size >= len(data) // 2, 30)
        plane.broker.restart()  # type: ignore[union-attr]
        restarted.set()

    thread = threading.Thread(target=cutter)
    thread.start()
    try:
        assert transport.fetch_package(sha) == data
    finally:
        device_mqtt.MAX_BLOCK = old_block
        thread.join(30)
        transport.close()
    assert restarted.is_set()
    assert blocks_in_file <= plane.bridge.blocks_served <= blocks_in_file + 1


# ------------------------------------------------------------------ malformed input


def test_grpc_malformed_and_oversized_messages_are_refused(plane: ControlPlane) -> None:
    creds = enroll_device(plane, "dev-a")
    metadata = (("authorization", f"Bearer {creds['device_token']}"),)
    with grpc.insecure_channel(
        f"127.0.0.1:{plane.grpc_port}", options=[("grpc.max_send_message_length", 64 << 20)]
    ) as channel:
        raw = channel.unary_unary("/fleetcast.v1.AgentService/UploadTelemetry")
        with pytest.raises(grpc.RpcError) as info:
            raw(b"\xff\xff\xff\xff garbage", metadata=metadata, timeout=5)
        assert info.value.code() in {grpc.StatusCode.INTERNAL, grpc.StatusCode.INVALID_ARGUMENT}
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        huge = agent_pb2.UploadRequest(
            items=[agent_pb2.Upload(seq=1, kind="status", body_json="x" * (9 << 20))]
        )
        with pytest.raises(grpc.RpcError) as info:
            stub.UploadTelemetry(huge, metadata=metadata, timeout=10)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        bad_items = agent_pb2.UploadRequest(
            items=[
                agent_pb2.Upload(seq=1, kind="status", body_json="{not json"),
                agent_pb2.Upload(seq=2, kind="gossip", body_json="{}"),
            ]
        )
        reply = stub.UploadTelemetry(bad_items, metadata=metadata, timeout=5)
        assert list(reply.rejected) == [1, 2]
        assert "not JSON" in reply.errors[0] and "unknown upload kind 'gossip'" in reply.errors[1]
        # the service still serves
        good = agent_pb2.UploadRequest(
            items=[
                agent_pb2.Upload(
                    seq=3,
                    kind="status",
                    body_json=json.dumps({"device_id": "dev-a", "sequence": 3}),
                )
            ]
        )
        assert list(stub.UploadTelemetry(good, metadata=metadata, timeout=5).acked) == [3]


def test_mqtt_malformed_payloads_are_rejected_and_the_bridge_lives(plane: ControlPlane) -> None:
    assert plane.services is not None and plane.mqtt_port is not None and plane.bridge is not None
    creds = enroll_device(plane, "dev-a")
    device = RawMqtt(plane.mqtt_port, "devices/dev-a", creds["mqtt_password"], "dev-a-raw")
    try:
        device.subscribe(f"{TOPIC_ROOT}/dev-a/telemetry/ack")
        device.publish(f"{TOPIC_ROOT}/dev-a/telemetry", b"\x00\x01 not json")
        device.publish(f"{TOPIC_ROOT}/dev-a/acks", b"[1, 2, 3]")
        device.publish(f"{TOPIC_ROOT}/dev-a/blocks/request", b'{"sha256": 5}')
        assert wait_until(lambda: plane.bridge.rejected >= 3)  # type: ignore[union-attr]
        assert wait_until(lambda: any(b"not a JSON object" in m.payload for m in device.messages))
        good = {
            "items": [
                {
                    "seq": 9,
                    "kind": "status",
                    "body_json": json.dumps({"device_id": "dev-a", "sequence": 9}),
                }
            ]
        }
        device.publish(f"{TOPIC_ROOT}/dev-a/telemetry", json.dumps(good))
        assert wait_until(lambda: [u.seq for u in plane.services.ingest.all("dev-a")] == [9])  # type: ignore[union-attr]
    finally:
        device.close()


def test_mqtt_uploads_of_several_devices_share_a_group_commit(plane: ControlPlane) -> None:
    """The bridge ingests each device on its own worker (in order), so uploads of devices
    arriving while a commit is in flight are stored together in the next transaction, as
    the gRPC server's are; each device is acked after its transaction committed."""
    assert plane.services is not None and plane.mqtt_port is not None and plane.bridge is not None
    bridge = plane.bridge
    names: list[str] = []
    workers: set[int] = set()
    for i in range(100):  # four devices on four different workers
        if bridge.worker_for(f"dev-{i}") not in workers:
            workers.add(bridge.worker_for(f"dev-{i}"))
            names.append(f"dev-{i}")
        if len(names) == 4:
            break
    group = plane.services.ingest.group
    real_write = group.write
    first_commit, release = threading.Event(), threading.Event()
    committed: list[list[str]] = []

    def write(batches: Any) -> Any:
        if not first_commit.is_set():  # hold the first commit until the others queued
            first_commit.set()
            assert release.wait(10)
        stored = real_write(batches)
        committed.append(sorted(b.device_id for b in batches))
        return stored

    group.write = write
    devices = []
    try:
        passwords = {name: enroll_device(plane, name)["mqtt_password"] for name in names}
        for name in names:  # connected once the broker has all four logins (connected between
            # two enrollments, an earlier client missed its acks here: the broker reloads)
            device = RawMqtt(plane.mqtt_port, f"devices/{name}", passwords[name], name)
            assert device.connected.is_set(), device.connect_result
            device.subscribe(f"{TOPIC_ROOT}/{name}/telemetry/ack")
            devices.append(device)

        def upload(device: RawMqtt, name: str) -> None:
            body = json.dumps({"device_id": name, "sequence": 1, "event": "t"})
            items = {"items": [{"seq": 1, "kind": "status", "body_json": body}]}
            device.publish(f"{TOPIC_ROOT}/{name}/telemetry", json.dumps(items))

        upload(devices[0], names[0])
        assert first_commit.wait(10)
        for device, name in zip(devices[1:], names[1:], strict=True):
            upload(device, name)
        assert wait_until(lambda: group.queued() == 3)  # each on its own worker, at once
        assert not any(d.messages for d in devices)  # nobody acked before its commit
        release.set()
        for device in devices:
            assert wait_until(lambda d=device: len(d.messages) == 1)
            assert json.loads(device.messages[0].payload)["acked"] == [1]
        assert committed == [[names[0]], sorted(names[1:])]
    finally:
        release.set()
        for device in devices:
            device.close()


# ------------------------------------------------------------------ TLS


@pytest.mark.parametrize("mutual", [False, True], ids=["tls", "mtls"])
def test_grpc_over_tls(tmp_path: Path, keys: Any, mutual: bool) -> None:
    certs = make_certs(tmp_path / "certs")
    tls = TlsConfig(
        cert=certs.server_cert, key=certs.server_key, client_ca=certs.ca if mutual else None
    )
    plane = ControlPlane(
        ServeOptions(
            data_dir=tmp_path / "cp",
            public_key=keys.public,
            grpc_address="127.0.0.1:0",
            grpc_tls=tls,
        )
    ).start()
    try:
        client_tls = GrpcTls(
            ca=certs.ca,
            cert=certs.client_cert if mutual else None,
            key=certs.client_key if mutual else None,
        )
        creds = enroll_device(plane, "dev-tls", tls=client_tls)
        transport = GrpcTransport(
            f"localhost:{plane.grpc_port}", creds["device_token"], tmp_path / "dl", tls=client_tls
        )
        try:
            assert transport.send([_msg(1, "dev-tls", 1)]) == [1]
        finally:
            transport.close()
        plain = GrpcTransport(f"127.0.0.1:{plane.grpc_port}", creds["device_token"], tmp_path / "x")
        try:
            with pytest.raises(TransportError):
                plain.send([_msg(2, "dev-tls", 2)])
        finally:
            plain.close()
        if mutual:  # the CA alone is not enough: the server wants a client certificate
            no_cert = GrpcTransport(
                f"localhost:{plane.grpc_port}",
                creds["device_token"],
                tmp_path / "y",
                tls=GrpcTls(ca=certs.ca),
            )
            try:
                with pytest.raises(TransportError):
                    no_cert.send([_msg(3, "dev-tls", 3)])
            finally:
                no_cert.close()
    finally:
        plane.stop()
