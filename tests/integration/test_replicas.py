"""Issue #9: two control-plane replicas on one PostgreSQL database serve the same fleet.

Replica A runs in this process (``ControlPlane``, what `fleetcast serve` runs,
so the test can write through its services as the REST API will); replica B is
a `fleetcast serve --store postgresql://…` process. A device enrolls through B
and keeps its command stream on B; commands written through A reach it, its
ack and uploads through B are seen by A, and a revocation through A cuts its
stream on B. Nothing is polled: PostgreSQL's LISTEN/NOTIFY carries the change.
"""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from pg_support import PostgresServer

from control_plane.server import ControlPlane, ServeOptions
from edge_agent.proto.fleetcast.v1 import agent_pb2, agent_pb2_grpc
from edge_agent.transport.grpc import enroll
from tests.integration.transport_support import HOST, wait_until

pytestmark = pytest.mark.integration


class Serve:
    """`fleetcast serve --store URL` as a child process, gRPC only, on a free port."""

    def __init__(self, data_dir: Path, store: str) -> None:
        env = {**os.environ, "FLEETCAST_DATA_DIR": str(data_dir)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "control_plane", "serve", "--grpc", "127.0.0.1:0",
             "--store", store, "--http", "127.0.0.1:0"],
            env=env, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stderr is not None
        seen = ""
        while line := self.proc.stderr.readline():
            seen += line
            if match := re.search(r"serving gRPC on port (\d+).*HTTP on port (\d+)", line):
                self.port, self.http_port = int(match.group(1)), int(match.group(2))
                break
        else:
            self.proc.kill()
            raise RuntimeError(f"fleetcast serve did not start: {seen}")
        self._drain = threading.Thread(target=self.proc.stderr.read, daemon=True)
        self._drain.start()

    def stop(self) -> int:
        self.proc.terminate()
        code = self.proc.wait(20)
        self._drain.join(5)
        assert self.proc.stderr is not None
        self.proc.stderr.close()
        return code


@pytest.fixture()
def replicas(
    postgres_server: PostgresServer, tmp_path: Path, keys: Any
) -> Iterator[tuple[ControlPlane, Serve, str]]:
    url = postgres_server.create_database()
    a = ControlPlane(
        ServeOptions(
            data_dir=tmp_path / "a", public_key=keys.public, grpc_address="127.0.0.1:0", store=url
        )
    ).start()
    try:
        b = Serve(tmp_path / "b", url)
        try:
            yield a, b, url
        finally:
            assert b.stop() == 0
    finally:
        a.stop()


class Device:
    """A device on one replica: its command stream (recording what arrives and how it
    ends), its acks on that stream, and uploads."""

    def __init__(self, target: str, token: str) -> None:
        self.channel = grpc.insecure_channel(target)
        self.stub = agent_pb2_grpc.AgentServiceStub(self.channel)  # type: ignore[no-untyped-call]
        self.metadata = (("authorization", f"Bearer {token}"),)
        self.outgoing: queue.Queue[Any] = queue.Queue()
        self.release = threading.Event()
        self.received: list[Any] = []
        self.code: grpc.StatusCode | None = None
        self.details = ""
        self.call = self.stub.Commands(self._requests(), metadata=self.metadata)
        threading.Thread(target=self._read, daemon=True).start()

    def _requests(self) -> Iterator[Any]:
        yield agent_pb2.AgentMessage(hello=agent_pb2.Hello(agent_version="test"))
        while not self.release.is_set():
            try:
                yield self.outgoing.get(timeout=0.2)
            except queue.Empty:
                continue

    def ack(self, command: Any) -> None:
        ack = agent_pb2.CommandAck(
            command_id=command.command_id, execution_version=command.execution_version, ok=True
        )
        self.outgoing.put(agent_pb2.AgentMessage(ack=ack))

    def upload_status(self, seq: int) -> list[int]:
        body = json.dumps({"device_id": "dev-b", "sequence": seq})
        item = agent_pb2.Upload(seq=seq, kind="status", body_json=body)
        reply = self.stub.UploadTelemetry(
            agent_pb2.UploadRequest(items=[item]), metadata=self.metadata, timeout=10
        )
        return list(reply.acked)

    def _read(self) -> None:
        try:
            for command in self.call:
                self.received.append(command)
            self.code = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            self.code, self.details = exc.code(), exc.details() or ""

    def close(self) -> None:
        self.release.set()
        self.call.cancel()
        self.channel.close()


def test_a_command_written_through_one_replica_reaches_a_device_on_the_other(
    replicas: tuple[ControlPlane, Serve, str],
) -> None:
    a, b, url = replicas
    assert a.services is not None
    on_b = f"127.0.0.1:{b.port}"
    token = a.services.enrollment.create_token("op", "dev-b")  # minted through A
    creds = enroll(on_b, token, "dev-b", HOST)  # used through B
    stream = Device(on_b, creds["device_token"])
    try:
        time.sleep(0.3)  # the stream is open on B before the command exists
        started = time.monotonic()
        record = a.services.commands.send("dev-b", "config", {"window_seconds": 7}, "op")
        assert wait_until(lambda: [c.command_id for c in stream.received] == [record.id])
        latency = time.monotonic() - started
        assert latency < 5, latency  # LISTEN/NOTIFY, not a backstop poll
        assert stream.received[0].execution_version == 1

        # the device acks and uploads through B; A sees both in the shared store
        stream.ack(stream.received[0])
        assert wait_until(lambda: a.services.commands.get(record.id).status == "ok")  # type: ignore[union-attr]
        assert stream.upload_status(1) == [1]
        assert [(u.seq, u.transport) for u in a.services.ingest.all("dev-b")] == [(1, "grpc")]

        # a second command gets the next execution version, whichever replica wrote it
        second = a.services.commands.send("dev-b", "capture", {"rate": 0.5}, "op")
        assert second.execution_version == 2
        assert wait_until(lambda: len(stream.received) == 2)

        # revocation through A ends the device's stream on B
        a.services.devices.revoke("dev-b", "op")
        assert wait_until(lambda: stream.code is not None)
        assert stream.code == grpc.StatusCode.UNAUTHENTICATED, stream.details
        assert "revoked" in stream.details
    finally:
        stream.close()

    # the operator's CLI, through B's API with a token minted through A, reads the same fleet
    from control_plane.services.audit import AuditService
    from control_plane.services.tokens import Principal, TokenService

    repos = a.services.repos
    _, token = TokenService(repos, AuditService(repos.audit)).create(
        "ops", "viewer", Principal("test", "admin")
    )
    listed = subprocess.run(
        [sys.executable, "-m", "control_plane", "devices", "list", "--json",
         "--server", f"http://127.0.0.1:{b.http_port}"],
        capture_output=True, text=True, check=True, env={**os.environ, "FLEETCAST_TOKEN": token},
    )  # fmt: skip
    assert '"id": "dev-b"' in listed.stdout and '"status": "revoked"' in listed.stdout
