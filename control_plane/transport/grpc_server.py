"""The agent-facing gRPC service (protos/fleetcast/v1/agent.proto) over the services.

Thin: each method turns the request into service calls and the answer back.
Domain errors map to status codes once, in :func:`_abort` (:data:`GRPC_STATUS`).
The device id always comes from the credential in the metadata, never from the
request body. Command streams and downloads learn of new commands and
revocations from :class:`StreamRegistry`, which the change dispatcher feeds
(``transport/changes.py``): one path, no polling of the store.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from control_plane.errors import (
    Conflict,
    ControlPlaneError,
    InvalidInput,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from control_plane.quotas import MAX_MESSAGE_BYTES
from control_plane.store.records import Command
from control_plane.transport.limits import CallLimiter, Slot
from control_plane.transport.streams import StreamRegistry
from edge_agent.core.topics import device_login, device_prefix
from edge_agent.proto.fleetcast.v1 import agent_pb2, agent_pb2_grpc

if TYPE_CHECKING:  # the container only: the transports never need Flask
    from control_plane.app import Fleetcast

logger = logging.getLogger(__name__)

GRPC_STATUS = {
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    Conflict: grpc.StatusCode.ALREADY_EXISTS,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
}
DEFAULT_CHUNK = 256 * 1024
MAX_CHUNK = 1024 * 1024
MAX_MESSAGE = MAX_MESSAGE_BYTES  # the same cap as MQTT ingest (control_plane/quotas.py)
DEFAULT_WORKERS = 512
T = TypeVar("T")


def _abort(context: grpc.ServicerContext, exc: ControlPlaneError) -> None:
    code = next((c for kind, c in GRPC_STATUS.items() if isinstance(exc, kind)), None)
    context.abort(code or grpc.StatusCode.INTERNAL, str(exc))


def _unary(method: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> T:
        try:
            return method(self, request, context)
        except ControlPlaneError as exc:
            _abort(context, exc)
            raise  # unreachable: abort raises

    return wrapper


def _streaming(method: Callable[..., Iterator[T]]) -> Callable[..., Iterator[T]]:
    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[T]:
        try:
            yield from method(self, request, context)
        except ControlPlaneError as exc:
            _abort(context, exc)

    return wrapper


@dataclass
class TransferStats:
    """What Download served, for operators (and the resume test)."""

    chunks: int = 0
    bytes: int = 0
    by_package: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, sha256: str, size: int) -> None:
        with self.lock:
            self.chunks += 1
            self.bytes += size
            self.by_package[sha256] = self.by_package.get(sha256, 0) + 1


class AgentServicer(agent_pb2_grpc.AgentServiceServicer):
    def __init__(
        self,
        services: Fleetcast,
        streams: StreamRegistry,
        limiter: CallLimiter | None = None,
        idle_seconds: float = 2.0,
    ) -> None:
        self.services = services
        self.streams = streams
        self.idle_seconds = idle_seconds  # how often an idle stream checks that its call lives
        self.transfers = TransferStats()
        self.limiter = limiter or CallLimiter(DEFAULT_WORKERS)

    def _device(self, context: grpc.ServicerContext) -> str:
        metadata = dict(context.invocation_metadata())
        header = str(metadata.get("authorization", ""))
        if not header.startswith("Bearer "):
            raise Unauthenticated("missing 'authorization: Bearer <device token>' metadata")
        device_id = self.services.devices.authenticate(header.removeprefix("Bearer ").strip())
        self.services.devices.touch(device_id)
        return device_id

    def _admit(
        self, context: grpc.ServicerContext, long: bool = False, stream: bool = False
    ) -> tuple[str, Slot]:
        """Authenticate and take one of the device's call slots (released when the call ends)."""
        device_id = self._device(context)
        slot = self.limiter.admit(device_id, long=long, stream=stream)
        context.add_callback(slot.release)
        return device_id, slot

    @_unary
    def Enroll(self, request: Any, context: grpc.ServicerContext) -> Any:
        host = {
            "os": request.host.os,
            "arch": request.host.arch,
            "cpu_features": list(request.host.cpu_features),
            "runtimes": list(request.host.runtimes),
            "execution_providers": list(request.host.execution_providers),
            "agent_version": request.host.agent_version,
        }
        creds = self.services.enrollment.enroll(request.enrollment_token, request.device_id, host)
        return agent_pb2.EnrollResponse(
            device_id=creds.device_id,
            device_token=creds.device_token,
            mqtt=agent_pb2.MqttLogin(
                username=device_login(creds.device_id),
                password=creds.mqtt_password,
                topic_prefix=device_prefix(creds.device_id),
            ),
        )

    @_streaming
    def Commands(self, request_iterator: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        device_id, slot = self._admit(context, long=True, stream=True)
        try:
            yield from self._command_stream(device_id, slot, request_iterator, context)
        finally:
            slot.release()

    def _command_stream(
        self, device_id: str, slot: Slot, request_iterator: Any, context: grpc.ServicerContext
    ) -> Iterator[Any]:
        stream = self.streams.open(device_id)
        try:
            if slot.replacing:
                self.streams.wake(device_id)  # the stream this one replaces ends at once
            done = threading.Event()
            context.add_callback(done.set)
            context.add_callback(stream.wake.set)
            reader = threading.Thread(
                target=self._read_acks, args=(device_id, request_iterator, done), daemon=True
            )
            reader.start()
            sent: set[str] = set()
            commands: list[Command] | None = self.services.commands.pending(device_id)
            while not done.is_set() and context.is_active():
                if slot.replaced.is_set():
                    logger.info("command stream of %s replaced by a newer one", device_id)
                    return
                if stream.revoked:
                    raise Unauthenticated(f"device {device_id!r} is revoked")
                for record in commands or ():
                    if record.id in sent:
                        continue
                    sent.add(record.id)
                    yield agent_pb2.Command(
                        command_id=record.id,
                        execution_version=record.execution_version,
                        kind=record.kind,
                        body_json=json.dumps(record.body, sort_keys=True),
                    )
                stream.wake.wait(self.idle_seconds)
                commands = self.streams.take(stream)
        finally:
            self.streams.close(stream)

    def _read_acks(self, device_id: str, requests: Any, done: threading.Event) -> None:
        try:
            for message in requests:
                if message.HasField("ack"):
                    ack = message.ack
                    try:
                        detail = json.loads(ack.detail_json) if ack.detail_json else {}
                        result = {
                            "error": ack.error,
                            **(detail if isinstance(detail, dict) else {}),
                        }
                        self.services.commands.ack(device_id, ack.command_id, ack.ok, result)
                    except (ControlPlaneError, ValueError) as exc:
                        logger.warning("ack from %s rejected: %s", device_id, exc)
        except grpc.RpcError:
            pass  # the agent went away; its next stream resends what is pending
        finally:
            done.set()

    @_streaming
    def Download(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        device_id, slot = self._admit(context, long=True)
        try:
            yield from self._download(device_id, request, context)
        finally:
            slot.release()

    def _download(
        self, device_id: str, request: Any, context: grpc.ServicerContext
    ) -> Iterator[Any]:
        path = self.services.packages.path_for_device(device_id, request.sha256)
        total = path.stat().st_size
        if request.offset > total:
            context.abort(
                grpc.StatusCode.OUT_OF_RANGE, f"offset {request.offset} is past the end ({total})"
            )
        size = min(request.chunk_size or DEFAULT_CHUNK, MAX_CHUNK)
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            digest.update(handle.read(request.offset))  # the hash covers the whole file
            offset = request.offset
            while True:
                if offset > request.offset and self.streams.is_revoked(device_id):
                    raise Unauthenticated(f"device {device_id!r} is revoked")
                data = handle.read(size)
                digest.update(data)
                last = offset + len(data) >= total
                self.transfers.add(request.sha256, len(data))
                yield agent_pb2.Chunk(
                    offset=offset,
                    data=data,
                    total_size=total,
                    last=last,
                    sha256=digest.hexdigest() if last else "",
                )
                offset += len(data)
                if last:
                    return

    @_unary
    def UploadTelemetry(self, request: Any, context: grpc.ServicerContext) -> Any:
        device_id, slot = self._admit(context)
        try:
            result = self.services.ingest.ingest(
                device_id, ((i.seq, i.kind, i.body_json) for i in request.items), "grpc"
            )
        finally:
            slot.release()
        return agent_pb2.UploadAck(
            acked=result.acked, rejected=result.rejected, errors=result.errors
        )


@dataclass(frozen=True)
class TlsConfig:
    cert: Path
    key: Path
    client_ca: Path | None = None  # set: mutual TLS, clients must present a cert it signed


def start_grpc_server(
    services: Fleetcast,
    streams: StreamRegistry,
    address: str = "127.0.0.1:0",
    tls: TlsConfig | None = None,
    workers: int = DEFAULT_WORKERS,
) -> tuple[grpc.Server, int, AgentServicer]:
    """Start the agent service; returns (server, bound port, servicer).

    The synchronous server holds one worker thread per open call, and every
    connected agent keeps a command stream open: ``workers`` bounds the agents
    one replica serves at once (plus their downloads). :class:`CallLimiter`
    keeps a quarter of them for Enroll and uploads, one command stream and a few
    calls per device. Calls beyond are refused with RESOURCE_EXHAUSTED rather
    than queued forever, and the agent retries with backoff.
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc-agent"),
        maximum_concurrent_rpcs=workers,
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.http2.max_pings_without_data", 0),
        ],
    )
    servicer = AgentServicer(services, streams, limiter=CallLimiter(workers))
    agent_pb2_grpc.add_AgentServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    if tls is None:
        port = server.add_insecure_port(address)
    else:
        credentials = grpc.ssl_server_credentials(
            [(tls.key.read_bytes(), tls.cert.read_bytes())],
            root_certificates=tls.client_ca.read_bytes() if tls.client_ca else None,
            require_client_auth=tls.client_ca is not None,
        )
        port = server.add_secure_port(address, credentials)
    server.start()
    logger.info("agent gRPC service on %s (port %d, tls=%s)", address, port, tls is not None)
    return server, port, servicer
