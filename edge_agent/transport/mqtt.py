"""The agent's MQTT transport (paho-mqtt), on the topic tree in docs/transports.md.

The device logs in as ``devices/<id>`` (edge_agent/core/topics.py); the broker's
ACL confines it to ``fleetcast/v1/devices/<id>/...``. A persistent session (clean_session off,
QoS 1) lets the broker hold commands while the device is away; a retained
status with a last will tells the control plane when it is online.
paho callbacks only enqueue or complete waits; the agent's threads do the work.
"""

from __future__ import annotations

import json
import logging
import queue
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.core.frames import MAX_BLOCK, FrameError, decode_block
from edge_agent.core.limits import MAX_UPLOAD_BYTES
from edge_agent.core.topics import TOPIC_ROOT, device_login
from edge_agent.outbox import OutboxMessage
from edge_agent.transport.base import Command, PayloadTooLarge, TransportError, body_json, drain
from edge_agent.transport.download import Block, Fatal, resumable_download

logger = logging.getLogger(__name__)

ROOT = TOPIC_ROOT
QOS = 1
ANSWER_TIMEOUT = 10.0


class MqttTransport:
    def __init__(
        self,
        host: str,
        port: int,
        device_id: str,
        password: str,
        download_dir: Path,
        ca_cert: Path | None = None,
        pipeline: int = 1,
        username: str | None = None,
        client_cert: Path | None = None,
        client_key: Path | None = None,
    ) -> None:
        self.device_id = device_id
        self.pipeline = pipeline
        self.download_dir = download_dir
        self.prefix = f"{ROOT}/{device_id}"
        self._commands: queue.Queue[Command] = queue.Queue()
        self._acks: queue.Queue[dict[str, Any]] = queue.Queue()
        self._blocks: queue.Queue[bytes] = queue.Queue()
        self._send_lock = threading.Lock()
        self._fetch_lock = threading.Lock()
        self.connected = threading.Event()
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"fleetcast-{device_id}",
            clean_session=False,
        )
        client.enable_logger(logger)
        client.username_pw_set(username or device_login(device_id), password)
        if ca_cert is not None:
            client.tls_set(
                ca_certs=str(ca_cert),
                certfile=str(client_cert) if client_cert else None,
                keyfile=str(client_key) if client_key else None,
            )
        client.will_set(
            f"{self.prefix}/status", json.dumps({"online": False}), qos=QOS, retain=True
        )
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_disconnect = lambda *_: self.connected.clear()
        client.on_message = self._on_message
        self._client = client
        client.connect_async(host, port, keepalive=30)
        client.loop_start()

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            logger.error("MQTT: broker refused %s: %s", self.device_id, reason)
            return
        no_delay(client)
        client.subscribe(
            [
                (f"{self.prefix}/{leaf}", QOS)
                for leaf in ("commands", "telemetry/ack", "blocks/data")
            ]
        )
        client.publish(f"{self.prefix}/status", json.dumps({"online": True}), qos=QOS, retain=True)
        self.connected.set()

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        leaf = message.topic.removeprefix(self.prefix + "/")
        if leaf == "blocks/data":
            self._blocks.put(bytes(message.payload))
            return
        try:
            body = json.loads(message.payload)
        except ValueError:
            logger.warning("MQTT: malformed payload on %s dropped", message.topic)
            return
        if leaf == "telemetry/ack" and isinstance(body, dict):
            self._acks.put(body)
        elif leaf == "commands" and isinstance(body, dict):
            try:
                self._commands.put(
                    Command(
                        id=str(body["command_id"]),
                        type=str(body["kind"]),
                        body=dict(body.get("body") or {}),
                        execution_version=int(body.get("execution_version", 0)),
                    )
                )
            except (KeyError, TypeError, ValueError) as exc:
                logger.warning("MQTT: malformed command dropped: %r", exc)
        else:
            logger.warning("MQTT: unexpected message on %s dropped", message.topic)

    def _publish(self, leaf: str, payload: bytes | str) -> None:
        if not self.connected.is_set():
            raise TransportError("MQTT: not connected to the broker")
        info = self._client.publish(f"{self.prefix}/{leaf}", payload, qos=QOS)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise TransportError(f"MQTT publish: {mqtt.error_string(info.rc)}")

    # -- commands

    def poll_commands(self, timeout: float) -> list[Command]:
        return drain(self._commands, timeout)

    def ack(
        self, command: Command, ok: bool, error: str = "", detail: dict[str, Any] | None = None
    ) -> None:
        payload = {
            "command_id": command.id,
            "execution_version": command.execution_version,
            "ok": ok,
            "error": error,
            "detail": detail or {},
        }
        try:
            self._publish("acks", json.dumps(payload))
        except TransportError as exc:  # the command is redelivered; the ack is sent again then
            logger.info("ack of %s deferred: %s", command.id, exc)

    # -- uploads

    def send(self, messages: Sequence[OutboxMessage]) -> list[int]:
        by_seq = {int(m.payload.get("sequence", m.id)): m.id for m in messages}
        items = [
            {"seq": seq, "kind": m.kind, "body_json": body_json(m.payload)}
            for seq, m in zip(by_seq, messages, strict=True)
        ]
        with self._send_lock:
            while not self._acks.empty():  # stale answers to an earlier, timed-out send
                self._acks.get_nowait()
            payload = json.dumps({"items": items}, separators=(",", ":"))
            if len(payload) > MAX_UPLOAD_BYTES:
                raise PayloadTooLarge(
                    f"MQTT upload of {len(payload)} bytes exceeds the limit of {MAX_UPLOAD_BYTES}"
                )
            self._publish("telemetry", payload)
            deadline = time.monotonic() + ANSWER_TIMEOUT
            while (left := deadline - time.monotonic()) > 0:
                try:
                    answer = self._acks.get(timeout=left)
                except queue.Empty:
                    break
                done = [int(s) for s in (*answer.get("acked", []), *answer.get("rejected", []))]
                for seq, error in zip(
                    answer.get("rejected", []), answer.get("errors", []), strict=False
                ):
                    logger.error("control plane rejected upload %s: %s (dropped)", seq, error)
                if set(done) & set(by_seq):
                    return [by_seq[s] for s in done if s in by_seq]
                if answer.get("errors") and not done:  # refused as a whole (quota): retry later
                    raise TransportError(f"MQTT upload refused: {answer['errors'][0]}")
        raise TransportError(f"MQTT: no telemetry ack within {ANSWER_TIMEOUT:.0f} s")

    # -- packages

    def _request(self, sha256: str, offset: int) -> None:
        self._publish(
            "blocks/request", json.dumps({"sha256": sha256, "offset": offset, "length": MAX_BLOCK})
        )

    def _stream(self, sha256: str, offset: int) -> Iterator[Block]:
        """Blocks in order from ``offset``, with up to ``self.pipeline`` requests in flight.

        The default of one bounds what a cut costs to the one block in flight;
        more requests in flight trade that for throughput on long round trips.
        """
        while not self._blocks.empty():
            self._blocks.get_nowait()
        total: int | None = None
        requested = offset  # next offset to ask for
        pending: dict[int, Block] = {}
        in_flight = 0
        while True:
            while in_flight < self.pipeline and (
                total is None and requested == offset or total is not None and requested < total
            ):
                self._request(sha256, requested)
                requested += MAX_BLOCK
                in_flight += 1
            if offset in pending:
                block = pending.pop(offset)
                yield block
                if block.last:
                    return
                offset += len(block.data)
                continue
            try:
                header, data = decode_block(self._blocks.get(timeout=ANSWER_TIMEOUT))
            except queue.Empty:
                raise TransportError(
                    f"MQTT: no block at offset {offset} within {ANSWER_TIMEOUT:.0f} s"
                ) from None
            except FrameError as exc:
                logger.warning("MQTT: malformed block dropped: %s", exc)
                continue
            if "error" in header:
                raise Fatal(f"download: {header['error']}")
            if header.get("sha256") != sha256 or not isinstance(header.get("offset"), int):
                continue
            in_flight -= 1
            total = int(header["total_size"])
            pending[header["offset"]] = Block(header["offset"], data, total, bool(header["last"]))

    def fetch_package(self, ref: str) -> bytes:
        with self._fetch_lock:
            return resumable_download(ref, self.download_dir, self._stream)

    def close(self) -> None:
        try:
            self._client.publish(
                f"{self.prefix}/status", json.dumps({"online": False}), qos=QOS, retain=True
            )
        finally:
            self._client.loop_stop()
            self._client.disconnect()


def no_delay(client: mqtt.Client) -> None:
    """Turn off Nagle on the client's socket: a small publish right after a large
    receive otherwise waits for the broker's delayed ACK (40 ms per round trip)."""
    sock = client.socket()
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
