"""The control plane's side of MQTT: commands down, acks/telemetry/block requests up.

paho callbacks only enqueue; ``WORKERS`` worker threads parse and call the services, each
device's messages always on the same worker (in the order they came), so uploads of several
devices are ingested at once and share the ingest's group commit (one transaction) as the gRPC
server's do.
Commands go down through one trigger: the change dispatcher hands the pending
commands to :meth:`MqttBridge.publish_pending`, which publishes the ones not
yet published (a device that comes online gets its pending ones again).
The device id of a message is the one in its topic: the broker's ACL lets a
device publish only under its own prefix, so the topic is as good as a login.
A malformed payload is logged and answered with an error where the device
waits for an answer (telemetry); nothing a device sends stops a worker.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from control_plane.errors import ControlPlaneError, ResourceExhausted, Unavailable
from control_plane.quotas import MAX_MESSAGE_BYTES
from control_plane.store.records import Command
from edge_agent.core.frames import MAX_BLOCK, encode_block
from edge_agent.core.topics import TOPIC_ROOT
from edge_agent.transport.mqtt import no_delay

if TYPE_CHECKING:  # the container only: the transports never need Flask
    from control_plane.app import Fleetcast

logger = logging.getLogger(__name__)

QOS = 1
ACTIVE_TTL = 1.0
WORKERS = 8  # uplink worker threads (a device's messages stay on one, in order)


@dataclass(frozen=True)
class MqttEndpoint:
    host: str
    port: int
    username: str
    password: str
    tls: bool = False
    ca_cert: str | None = None  # None with tls: the system's CAs
    client_cert: str | None = None  # for a broker that wants mutual TLS
    client_key: str | None = None


class MqttBridge:
    def __init__(self, services: Fleetcast, endpoint: MqttEndpoint) -> None:
        self.services = services
        self.endpoint = endpoint
        self.rejected = 0
        self.blocks_served = 0
        self._counts = threading.Lock()  # the counters above, bumped by every worker
        self._active: dict[str, tuple[bool, float]] = {}  # device -> (active, checked at)
        self._published: set[str] = set()  # ids of pending commands published already
        self._published_lock = threading.Lock()
        self._queues: list[queue.Queue[mqtt.MQTTMessage | None]] = [
            queue.Queue() for _ in range(WORKERS)
        ]
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id="fleetcast-control-plane",
            clean_session=True,
        )
        self._client.enable_logger(logger)
        self._client.username_pw_set(endpoint.username, endpoint.password)
        if endpoint.tls or endpoint.ca_cert:
            self._client.tls_set(
                ca_certs=endpoint.ca_cert,
                certfile=endpoint.client_cert,
                keyfile=endpoint.client_key,
            )
        self._client.reconnect_delay_set(min_delay=1, max_delay=10)
        self._client.max_queued_messages_set(0)
        self._client.on_connect = self._on_connect
        self._client.on_message = lambda _c, _u, message: self._route(message)
        self._workers = [
            threading.Thread(target=self._work, args=(q,), name=f"mqtt-bridge-{i}", daemon=True)
            for i, q in enumerate(self._queues)
        ]

    def start(self) -> None:
        for worker in self._workers:
            worker.start()
        self._client.connect_async(self.endpoint.host, self.endpoint.port, keepalive=30)
        self._client.loop_start()

    def stop(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()
        for q in self._queues:
            q.put(None)
        for worker in self._workers:
            worker.join(5)

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            logger.error("MQTT bridge: broker refused the connection: %s", reason)
            return
        no_delay(client)
        for leaf in ("acks", "status", "telemetry", "blocks/request"):
            client.subscribe(f"{TOPIC_ROOT}/+/{leaf}", qos=QOS)

    # -- downlink

    def _publish(self, topic: str, payload: bytes | str) -> None:
        info = self._client.publish(topic, payload, qos=QOS)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            # not connected: the device gets it on its next status/online resend
            logger.info("MQTT publish to %s deferred: %s", topic, mqtt.error_string(info.rc))

    def publish_pending(self, pending: list[Command]) -> None:
        """Publish the pending commands not published yet (the change dispatcher calls this)."""
        with self._published_lock:
            ids = {c.id for c in pending}
            fresh = [c for c in pending if c.id not in self._published]
            self._published = (self._published & ids) | {c.id for c in fresh}
        for record in fresh:
            self.publish_command(record)

    def forget(self, device_id: str) -> None:
        """A device was revoked: refuse its messages from now on (the dispatcher calls this)."""
        self._active[device_id] = (False, time.monotonic())

    def publish_command(self, record: Command) -> None:
        payload = {
            "command_id": record.id,
            "execution_version": record.execution_version,
            "kind": record.kind,
            "body": record.body,
        }
        self._publish(f"{TOPIC_ROOT}/{record.device_id}/commands", json.dumps(payload))

    def resend_pending(self, device_id: str) -> None:
        for record in self.services.commands.pending(device_id):
            self.publish_command(record)

    # -- uplink

    def worker_for(self, device_id: str) -> int:
        """The worker a device's messages go to (stable: its messages keep their order)."""
        return zlib.crc32(device_id.encode()) % len(self._queues)

    def _route(self, message: mqtt.MQTTMessage) -> None:
        parts = message.topic.split("/")
        root_len = len(TOPIC_ROOT.split("/"))
        # the device level of the topic (a malformed topic is rejected by whichever worker)
        device_id = parts[root_len] if len(parts) > root_len else message.topic
        self._queues[self.worker_for(device_id)].put(message)

    def _work(self, messages: queue.Queue[mqtt.MQTTMessage | None]) -> None:
        while (message := messages.get()) is not None:
            try:
                self._handle(message)
            except Exception:  # one bad message must not stop the bridge
                with self._counts:
                    self.rejected += 1
                logger.exception("MQTT bridge: message on %s", message.topic)

    def _handle(self, message: mqtt.MQTTMessage) -> None:
        parts = message.topic.split("/")
        root_len = len(TOPIC_ROOT.split("/"))
        if len(parts) < root_len + 2 or "/".join(parts[:root_len]) != TOPIC_ROOT:
            self._reject(message.topic, "unexpected topic")
            return
        device_id, leaf = parts[root_len], "/".join(parts[root_len + 1 :])
        if not self._is_active(device_id):
            self._reject(message.topic, f"device {device_id!r} is not enrolled or is revoked")
            return
        if len(message.payload) > MAX_MESSAGE_BYTES:  # an external broker may not cap it
            problem = f"message of {len(message.payload)} bytes exceeds {MAX_MESSAGE_BYTES}"
            self._reject(message.topic, problem)
            if leaf == "telemetry":
                self._telemetry_ack(device_id, [], [], [problem])
            return
        if leaf == "blocks/request":
            self._serve_block(device_id, message.payload)
            return
        try:
            body = json.loads(message.payload)
            if not isinstance(body, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            self._reject(message.topic, f"payload is not a JSON object: {exc}")
            if leaf == "telemetry":
                self._telemetry_ack(device_id, [], [], [f"payload is not a JSON object: {exc}"])
            return
        if leaf == "status":
            self.services.devices.touch(device_id)
            if body.get("online"):
                self.resend_pending(device_id)
        elif leaf == "acks":
            self._ack(device_id, body)
        elif leaf == "telemetry":
            self._telemetry(device_id, body)
        else:
            self._reject(message.topic, "unexpected topic")

    def _is_active(self, device_id: str) -> bool:
        """Whether a device may talk; cached for a second (revocation also drops its login)."""
        now = time.monotonic()
        cached = self._active.get(device_id)
        if cached is None or now - cached[1] > ACTIVE_TTL:
            cached = (self.services.devices.is_active(device_id), now)
            self._active[device_id] = cached
        return cached[0]

    def _reject(self, topic: str, reason: str) -> None:
        with self._counts:
            self.rejected += 1
        logger.warning("MQTT bridge: rejected message on %s: %s", topic, reason)

    def _ack(self, device_id: str, body: dict[str, Any]) -> None:
        try:
            detail = body.get("detail") if isinstance(body.get("detail"), dict) else {}
            self.services.commands.ack(
                device_id,
                str(body["command_id"]),
                bool(body.get("ok")),
                {"error": str(body.get("error", "")), **(detail or {})},
            )
        except (KeyError, ControlPlaneError) as exc:
            self._reject(f"{TOPIC_ROOT}/{device_id}/acks", str(exc))

    def _telemetry(self, device_id: str, body: dict[str, Any]) -> None:
        items = body.get("items")
        if not isinstance(items, list):
            self._telemetry_ack(device_id, [], [], ["payload has no 'items' list"])
            return
        parsed, bad, errors = [], [], []
        for item in items:
            try:
                parsed.append((int(item["seq"]), str(item["kind"]), str(item["body_json"])))
            except (KeyError, TypeError, ValueError) as exc:
                errors.append(f"malformed item: {exc!r}")
                seq = item.get("seq") if isinstance(item, dict) else None
                if isinstance(seq, int):
                    bad.append(seq)
        try:
            result = self.services.ingest.ingest(device_id, parsed, "mqtt")
        except (ResourceExhausted, Unavailable) as exc:  # not stored: the device resends later
            self._telemetry_ack(device_id, [], [], [str(exc)])
            return
        self._telemetry_ack(device_id, result.acked, result.rejected + bad, result.errors + errors)

    def _telemetry_ack(
        self, device_id: str, acked: list[int], rejected: list[int], errors: list[str]
    ) -> None:
        payload = json.dumps({"acked": acked, "rejected": rejected, "errors": errors})
        self._publish(f"{TOPIC_ROOT}/{device_id}/telemetry/ack", payload)

    def _serve_block(self, device_id: str, raw: bytes | bytearray) -> None:
        topic = f"{TOPIC_ROOT}/{device_id}/blocks/data"
        try:
            request = json.loads(raw)
            sha256, offset = str(request["sha256"]), int(request["offset"])
            length = min(int(request.get("length") or MAX_BLOCK), MAX_BLOCK)
            path = self.services.packages.path_for_device(device_id, sha256)
        except (ValueError, KeyError, TypeError, ControlPlaneError) as exc:
            self._reject(topic, f"block request: {exc}")
            self._publish(topic, encode_block({"error": f"block request: {exc}"}, b""))
            return
        total = path.stat().st_size
        with path.open("rb") as handle:
            handle.seek(offset)
            data = handle.read(length)
        header = {
            "sha256": sha256,
            "offset": offset,
            "total_size": total,
            "last": offset + len(data) >= total,
        }
        with self._counts:
            self.blocks_served += 1
        self._publish(topic, encode_block(header, data))
