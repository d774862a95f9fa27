"""The agent's gRPC transport to the control plane (protos/fleetcast/v1/agent.proto).

The agent opens every connection. A background thread keeps the command stream
up, reconnecting with jittered exponential backoff; commands land in a queue
that :meth:`poll_commands` reads, and acks ride the same stream back.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from edge_agent import __version__
from edge_agent.core.backoff import Backoff
from edge_agent.core.limits import MAX_UPLOAD_BYTES
from edge_agent.outbox import OutboxMessage
from edge_agent.proto.fleetcast.v1 import agent_pb2, agent_pb2_grpc
from edge_agent.transport.base import Command, PayloadTooLarge, TransportError, body_json, drain
from edge_agent.transport.download import Block, Fatal, resumable_download

logger = logging.getLogger(__name__)

CALL_TIMEOUT = 15.0
_FATAL = {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.INVALID_ARGUMENT}


@dataclass(frozen=True)
class GrpcTls:
    ca: Path
    cert: Path | None = None  # client certificate, for mutual TLS
    key: Path | None = None
    server_name: str | None = None


def make_channel(target: str, tls: GrpcTls | None) -> grpc.Channel:
    options: list[tuple[str, str | int]] = [
        ("grpc.max_receive_message_length", MAX_UPLOAD_BYTES),
        ("grpc.max_send_message_length", MAX_UPLOAD_BYTES),
    ]
    if tls is None:
        return grpc.insecure_channel(target, options=options)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=tls.ca.read_bytes(),
        private_key=tls.key.read_bytes() if tls.key else None,
        certificate_chain=tls.cert.read_bytes() if tls.cert else None,
    )
    if tls.server_name:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    return grpc.secure_channel(target, credentials, options=options)


def _error(exc: grpc.RpcError) -> str:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return f"{code.name if code else 'UNKNOWN'}: {details}"


def enroll(
    target: str, token: str, device_id: str, host: dict[str, Any], tls: GrpcTls | None = None
) -> dict[str, str]:
    """Trade a one-time enrollment token for this device's credentials."""
    with make_channel(target, tls) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)  # type: ignore[no-untyped-call]
        try:
            reply = stub.Enroll(
                agent_pb2.EnrollRequest(
                    enrollment_token=token, device_id=device_id, host=agent_pb2.HostFacts(**host)
                ),
                timeout=CALL_TIMEOUT,
            )
        except grpc.RpcError as exc:
            raise TransportError(f"enroll: {_error(exc)}") from exc
    return {
        "device_id": reply.device_id,
        "device_token": reply.device_token,
        "mqtt_username": reply.mqtt.username,
        "mqtt_password": reply.mqtt.password,
    }


def upload(
    stub: Any,
    metadata: Sequence[tuple[str, str]],
    messages: Sequence[OutboxMessage],
    timeout: float,
) -> list[int]:
    """One UploadTelemetry call; the outbox ids the control plane acked or rejected.

    Shared by the agent's transport and the functions' upload-only one. A message the
    server refuses for its size raises :class:`PayloadTooLarge` (the outbox drops it,
    counted); any other failure raises :class:`TransportError` (sent again later).
    """
    by_seq: dict[int, int] = {}
    items = []
    for message in messages:
        seq = int(message.payload.get("sequence", message.id))
        by_seq[seq] = message.id
        items.append(
            agent_pb2.Upload(seq=seq, kind=message.kind, body_json=body_json(message.payload))
        )
    try:
        reply = stub.UploadTelemetry(
            agent_pb2.UploadRequest(items=items), metadata=metadata, timeout=timeout
        )
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in str(
            exc.details()
        ):
            raise PayloadTooLarge(f"upload: {_error(exc)}") from exc
        raise TransportError(f"upload: {_error(exc)}") from exc
    for seq, error in zip(reply.rejected, reply.errors, strict=False):
        logger.error("control plane rejected upload %d: %s (dropped)", seq, error)
    return [by_seq[s] for s in (*reply.acked, *reply.rejected) if s in by_seq]


class GrpcTransport:
    def __init__(
        self,
        target: str,
        device_token: str,
        download_dir: Path,
        tls: GrpcTls | None = None,
        chunk_size: int = 256 * 1024,
    ) -> None:
        self.download_dir = download_dir
        self.chunk_size = chunk_size
        self._metadata = (("authorization", f"Bearer {device_token}"),)
        self._channel = make_channel(target, tls)
        self._stub = agent_pb2_grpc.AgentServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._commands: queue.Queue[Command] = queue.Queue()
        self._outgoing: queue.Queue[Any] = queue.Queue()
        self._closed = threading.Event()
        self.connected = threading.Event()
        self._stream_thread = threading.Thread(
            target=self._stream_loop, name="grpc-commands", daemon=True
        )
        self._stream_thread.start()

    # -- commands

    def _requests(self, stop: threading.Event) -> Iterator[Any]:
        yield agent_pb2.AgentMessage(hello=agent_pb2.Hello(agent_version=__version__))
        while not stop.is_set() and not self._closed.is_set():
            try:
                item = self._outgoing.get(timeout=0.5)
            except queue.Empty:
                continue
            yield item

    def _stream_loop(self) -> None:
        backoff = Backoff()
        while not self._closed.is_set():
            stop = threading.Event()
            try:
                responses = self._stub.Commands(self._requests(stop), metadata=self._metadata)
                self._active = responses
                for message in responses:
                    self.connected.set()
                    backoff.reset()
                    self._commands.put(
                        Command(
                            id=message.command_id,
                            type=message.kind,
                            body=json.loads(message.body_json or "{}"),
                            execution_version=message.execution_version,
                        )
                    )
            except grpc.RpcError as exc:
                if self._closed.is_set():
                    return
                logger.info("command stream: %s", _error(exc))
            except ValueError as exc:  # a command body that is not JSON
                logger.warning("command stream: malformed command: %s", exc)
            finally:
                stop.set()
                self.connected.clear()
            self._closed.wait(backoff.next())

    def poll_commands(self, timeout: float) -> list[Command]:
        return drain(self._commands, timeout)

    def ack(
        self, command: Command, ok: bool, error: str = "", detail: dict[str, Any] | None = None
    ) -> None:
        self._outgoing.put(
            agent_pb2.AgentMessage(
                ack=agent_pb2.CommandAck(
                    command_id=command.id,
                    execution_version=command.execution_version,
                    ok=ok,
                    error=error,
                    detail_json=json.dumps(detail or {}),
                )
            )
        )

    # -- uploads

    def send(self, messages: Sequence[OutboxMessage]) -> list[int]:
        return upload(self._stub, self._metadata, messages, CALL_TIMEOUT)

    # -- packages

    def _blocks(self, sha256: str, offset: int) -> Iterator[Block]:
        request = agent_pb2.DownloadRequest(
            sha256=sha256, offset=offset, chunk_size=self.chunk_size
        )
        try:
            for chunk in self._stub.Download(request, metadata=self._metadata, timeout=300):
                if chunk.last and chunk.sha256 and chunk.sha256 != sha256:
                    raise Fatal(f"server says the package hashes to {chunk.sha256}, not {sha256}")
                yield Block(chunk.offset, chunk.data, chunk.total_size, chunk.last)
        except grpc.RpcError as exc:
            if exc.code() in _FATAL:
                raise Fatal(f"download: {_error(exc)}") from exc
            raise TransportError(f"download: {_error(exc)}") from exc

    def fetch_package(self, ref: str) -> bytes:
        return resumable_download(ref, self.download_dir, self._blocks)

    def close(self) -> None:
        self._closed.set()
        self._channel.close()
        self._stream_thread.join(5)
