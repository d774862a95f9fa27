"""Issue #7, control plane over gRPC: starvation, token expiry, a locked store, download scope."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from control_plane.app import sqlite_path
from control_plane.errors import Unauthenticated
from control_plane.server import ControlPlane, ServeOptions
from edge_agent.outbox import OutboxMessage
from edge_agent.proto.fleetcast.v1 import agent_pb2, agent_pb2_grpc
from edge_agent.transport.base import TransportError
from edge_agent.transport.download import Fatal
from edge_agent.transport.grpc import GrpcTransport, enroll
from tests.integration.transport_support import HOST, enroll_device, wait_until

pytestmark = pytest.mark.integration


def _status(device: str, seq: int) -> agent_pb2.Upload:
    body = json.dumps({"device_id": device, "sequence": seq})
    return agent_pb2.Upload(seq=seq, kind="status", body_json=body)


def _auth(creds: dict[str, str]) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {creds['device_token']}"),)


class IdleStream:
    """A Commands stream that says hello and then stays open without a word."""

    def __init__(self, stub: Any, creds: dict[str, str]) -> None:
        self.release = threading.Event()
        self.received: list[Any] = []
        self.code: grpc.StatusCode | None = None
        self.ended = threading.Event()
        self.call = stub.Commands(self._requests(), metadata=_auth(creds))
        threading.Thread(target=self._read, daemon=True).start()

    def _requests(self) -> Iterator[agent_pb2.AgentMessage]:
        yield agent_pb2.AgentMessage(hello=agent_pb2.Hello(agent_version="idle"))
        self.release.wait(60)

    def _read(self) -> None:
        try:
            for command in self.call:
                self.received.append(command)
            self.code = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            self.code = exc.code()
        finally:
            self.ended.set()

    def close(self) -> None:
        self.release.set()
        self.call.cancel()


# ------------------------------------------------------------------ no starving the others


def test_idle_streams_of_one_device_do_not_starve_the_others(tmp_path: Path, keys: Any) -> None:
    plane = ControlPlane(
        ServeOptions(
            data_dir=tmp_path / "cp",
            public_key=keys.public,
            grpc_address="127.0.0.1:0",
            grpc_workers=16,  # as the audit ran it; the same code path as 512
        )
    ).start()
    assert plane.services is not None
    hog = enroll_device(plane, "dev-hog")
    other = enroll_device(plane, "dev-b")
    streams: list[IdleStream] = []
    channel = grpc.insecure_channel(f"127.0.0.1:{plane.grpc_port}")
    try:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        streams = [IdleStream(stub, hog) for _ in range(16)]
        # one stream per device: every older one ends (replaced, or refused over the cap)
        assert wait_until(lambda: sum(not s.ended.is_set() for s in streams) <= 1)
        ended = {s.code for s in streams if s.ended.is_set()}
        assert ended <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, ended

        # the other device still uploads, streams commands, and a new device enrolls
        reply = stub.UploadTelemetry(
            agent_pb2.UploadRequest(items=[_status("dev-b", 1)]), metadata=_auth(other), timeout=10
        )
        assert list(reply.acked) == [1]
        b_stream = IdleStream(stub, other)
        streams.append(b_stream)
        record = plane.services.commands.send("dev-b", "config", {"window_seconds": 5}, "op")
        assert wait_until(lambda: [c.command_id for c in b_stream.received] == [record.id])
        assert enroll_device(plane, "dev-new")["device_id"] == "dev-new"

        # the hog is refused beyond its per-device cap, for itself only
        more = [IdleStream(stub, hog) for _ in range(8)]
        streams += more
        assert wait_until(lambda: sum(not s.ended.is_set() for s in more) <= 1)
        assert not b_stream.ended.is_set()
    finally:
        for stream in streams:
            stream.close()
        channel.close()
        plane.stop()


# ------------------------------------------------------------------ enrollment tokens expire


def _store_path(plane: ControlPlane) -> Path:
    assert plane.services is not None
    path = sqlite_path(plane.services.settings.store_url)
    assert path is not None
    return path


def test_enrollment_tokens_expire(plane: ControlPlane) -> None:
    assert plane.services is not None
    target = f"127.0.0.1:{plane.grpc_port}"
    now = [time.time()]
    plane.services.enrollment.clock = lambda: now[0]
    default = plane.services.enrollment.create_token("op", "dev-late")
    short = plane.services.enrollment.create_token("op", "dev-short", ttl=90)
    now[0] += 91
    with pytest.raises(TransportError, match="UNAUTHENTICATED: enrollment token expired"):
        enroll(target, short, "dev-short", HOST)
    now[0] += 24 * 3600
    with pytest.raises(TransportError, match="expired .* mint a new one"):
        enroll(target, default, "dev-late", HOST)
    # a token stored without an expiry (an older store) expires 24 h after creation
    fresh = plane.services.enrollment.create_token("op", "dev-old")
    old = sqlite3.connect(_store_path(plane))
    with old:
        old.execute(
            "UPDATE enrollment_tokens SET created_at = ?, expires_at = NULL WHERE device_id = ?",
            [now[0] - 400 * 86400, "dev-old"],
        )
    old.close()
    with pytest.raises(TransportError, match="expired"):
        enroll(target, fresh, "dev-old", HOST)
    assert [d.id for d in plane.services.devices.list().items] == []
    ok = plane.services.enrollment.create_token("op", "dev-ok")
    assert enroll(target, ok, "dev-ok", HOST)["device_id"] == "dev-ok"


# ------------------------------------------------------------------ a locked store


def test_a_locked_store_answers_unavailable_instead_of_stalling(plane: ControlPlane) -> None:
    assert plane.services is not None
    creds = enroll_device(plane, "dev-a")
    token = plane.services.enrollment.create_token("op", "dev-z")
    other = sqlite3.connect(_store_path(plane), timeout=0)
    with grpc.insecure_channel(f"127.0.0.1:{plane.grpc_port}") as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        try:
            other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            other.execute("UPDATE devices SET host_json = host_json")
            with pytest.raises(grpc.RpcError) as info:
                stub.UploadTelemetry(
                    agent_pb2.UploadRequest(items=[_status("dev-a", 1)]),
                    metadata=_auth(creds),
                    timeout=20,
                )
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE, info.value.details()
            assert "store is busy" in info.value.details()
            with pytest.raises(grpc.RpcError) as info:
                stub.Enroll(
                    agent_pb2.EnrollRequest(enrollment_token=token, device_id="dev-z"),
                    timeout=20,
                )
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE, info.value.details()
            # reads do not write: an authenticated stream still gets its commands
            stream = IdleStream(stub, creds)
            try:
                other.rollback()
                record = plane.services.commands.send("dev-a", "config", {"a": 1}, "op")
                other.execute("BEGIN IMMEDIATE")
                other.execute("UPDATE devices SET host_json = host_json")
                assert wait_until(lambda: [c.command_id for c in stream.received] == [record.id])
            finally:
                stream.close()
        finally:
            other.rollback()
            other.close()
        reply = stub.UploadTelemetry(
            agent_pb2.UploadRequest(items=[_status("dev-a", 1)]), metadata=_auth(creds), timeout=10
        )
        assert list(reply.acked) == [1]
    plane.services.devices.flush_activity()  # last-seen is written in batches, not on every call
    assert plane.services.repos.devices.get("dev-a").last_seen is not None
    assert enroll(f"127.0.0.1:{plane.grpc_port}", token, "dev-z", HOST)["device_id"] == "dev-z"


# ------------------------------------------------------------------ downloads


def test_a_device_downloads_only_packages_deployed_to_it(
    plane: ControlPlane, package: Path, tmp_path: Path
) -> None:
    assert plane.services is not None
    a = enroll_device(plane, "dev-a")
    b = enroll_device(plane, "dev-b")
    sha = hashlib.sha256(package.read_bytes()).hexdigest()
    plane.services.commands.send("dev-a", "deploy", {"sha256": sha}, "op")
    target = f"127.0.0.1:{plane.grpc_port}"
    thief = GrpcTransport(target, b["device_token"], tmp_path / "b")
    owner = GrpcTransport(target, a["device_token"], tmp_path / "a")
    try:
        with pytest.raises(Fatal, match="never deployed to device 'dev-b'"):
            thief.fetch_package(sha)
        assert owner.fetch_package(sha) == package.read_bytes()
    finally:
        thief.close()
        owner.close()


def test_revoking_stops_a_download_in_flight(plane: ControlPlane, package: Path) -> None:
    assert plane.services is not None and plane.servicer is not None
    creds = enroll_device(plane, "dev-a")
    data = package.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    plane.services.commands.send("dev-a", "deploy", {"sha256": sha}, "op")
    # One-byte chunks and a fixed 64 KiB HTTP/2 window (no BDP probing): the file is
    # many windows long on the wire, so the server cannot have produced it all before
    # the revoke, whatever the scheduling on a loaded machine.
    options = [("grpc.http2.bdp_probe", 0)]
    with grpc.insecure_channel(f"127.0.0.1:{plane.grpc_port}", options=options) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        call = stub.Download(
            agent_pb2.DownloadRequest(sha256=sha, offset=0, chunk_size=1),
            metadata=_auth(creds),
        )
        received = 0
        with pytest.raises(grpc.RpcError) as info:
            for piece in call:
                received += len(piece.data)
                if received == 1:  # the first chunk is in: revoke, then read on
                    plane.services.devices.revoke("dev-a", "op")
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "revoked" in info.value.details()
    # flow control lets a few chunks be in flight; far fewer than the file
    assert received < len(data) // 2, (received, len(data))
    with pytest.raises(Unauthenticated):
        plane.services.devices.authenticate(creds["device_token"])


def test_uploads_over_quota_are_refused_counted_and_kept(
    plane: ControlPlane, tmp_path: Path
) -> None:
    from control_plane.quotas import QuotaLimits

    assert plane.services is not None
    creds = enroll_device(plane, "dev-a")
    now = [0.0]
    plane.services.ingest.quota.limits = QuotaLimits(
        bytes_per_second=100, burst_bytes=200, items_per_second=1, burst_items=5
    )
    plane.services.ingest.quota.clock = lambda: now[0]
    transport = GrpcTransport(f"127.0.0.1:{plane.grpc_port}", creds["device_token"], tmp_path)
    msgs = [
        OutboxMessage(i, "status", {"device_id": "dev-a", "sequence": i, "pad": "x" * 40}, 1)
        for i in (1, 2, 3, 4)
    ]
    try:
        assert sorted(transport.send(msgs[:2])) == [1, 2]  # ~2 x 88 bytes of 200
        with pytest.raises(TransportError, match="RESOURCE_EXHAUSTED: .*over its upload quota"):
            transport.send(msgs[2:])
        assert [u.seq for u in plane.services.ingest.all()] == [1, 2]  # nothing of it stored
        (device,) = plane.services.devices.list().items
        assert device.uploads_refused == 1
        now[0] += 10  # the bucket refills; the device sends the same messages again
        assert sorted(transport.send(msgs[2:])) == [3, 4]
        assert [u.seq for u in plane.services.ingest.all()] == [1, 2, 3, 4]
    finally:
        transport.close()
    plane.services.devices.flush_activity()
    (device,) = plane.services.devices.list().items
    assert device.uploads_refused == 1
