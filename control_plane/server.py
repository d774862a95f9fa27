"""`fleetcast serve`: the app (store and services), the gRPC agent service and, optionally, MQTT.

With no broker configured only gRPC is served. With MQTT on, the control plane
either starts and manages its own mosquitto (embedded default: it writes the
password and ACL files and adds or removes device logins) or bridges to a broker
the fleet already runs (``mqtt_url``), whose device logins that broker's
operator provisions.

Store changes reach the devices through one :class:`ChangeDispatcher`: a
command or a revocation written by this process, the CLI or another replica on
the same PostgreSQL database takes the same path.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from flask import Flask

from control_plane.api.serve import HttpHandle
from control_plane.app import Fleetcast, create_app, services_of
from control_plane.errors import ControlPlaneError
from control_plane.services.alerts import AlertService, Notifications, WaveDrift
from control_plane.services.audit import AuditService
from control_plane.services.lineage import LineageService
from control_plane.services.monitoring import MonitoringService
from control_plane.services.retention import RetentionPolicy, RetentionService
from control_plane.services.rollouts import AlertDrift, RolloutService
from control_plane.settings import Settings
from control_plane.store.notify import ANY, COMMANDS, Subscription
from control_plane.transport.broker import CONTROL_PLANE_USER, BrokerTls, MosquittoBroker
from control_plane.transport.changes import ChangeDispatcher
from control_plane.transport.grpc_server import (
    DEFAULT_WORKERS,
    AgentServicer,
    TlsConfig,
    start_grpc_server,
)
from control_plane.transport.mqtt import MqttBridge, MqttEndpoint
from control_plane.transport.streams import StreamRegistry
from edge_agent.core.netaddr import is_loopback, split_host_port
from edge_agent.core.topics import device_login

if TYPE_CHECKING:
    from control_plane.monitoring.openlineage import OpenLineagePusher

logger = logging.getLogger(__name__)

FLUSH_SECONDS = 5.0  # last-seen times and quota refusals are written this often
ROLLOUT_TICK_SECONDS = 2.0  # running rollouts are stepped (acks fed, gates read) this often
ROLLOUT_WAKE_SECONDS = 0.25  # and sooner when commands change (acks), but not more often than this
INSECURE_MARKER = "serve-insecure.json"
ALERT_INTERVAL_SECONDS = 60.0
DELIVERY_SECONDS = 5.0  # notifications due for a retry are sent this often


class InsecureListener(ControlPlaneError):
    """A listener or broker link off this host without TLS, and no --insecure."""


@dataclass(frozen=True)
class ServeOptions:
    data_dir: Path
    public_key: Path | None = None
    grpc_address: str = "127.0.0.1:50051"
    grpc_tls: TlsConfig | None = None
    grpc_workers: int = DEFAULT_WORKERS
    mqtt: bool = False
    mqtt_host: str = "127.0.0.1"  # embedded broker's listen address
    mqtt_port: int = 0  # embedded broker's port; 0 picks a free one
    mqtt_tls: BrokerTls | None = None
    mqtt_external: MqttEndpoint | None = None
    store: str | None = None  # postgresql://… or a SQLite URL; None: <data dir>/store.db
    in_memory_store: bool = False
    insecure: bool = False  # allow plaintext off this host (warned at start and in devices list)
    http_address: str | None = None  # the REST API (waitress); None: not served
    rollout_tick_seconds: float = ROLLOUT_TICK_SECONDS  # 0: no rollout ticker (tests drive it)
    alert_interval_s: float = ALERT_INTERVAL_SECONDS  # alert rules evaluated (0: never)
    alert_notifications: Notifications | None = None  # webhooks, e-mail (None: nobody told)
    retention: RetentionPolicy = dataclasses.field(default_factory=RetentionPolicy)
    openlineage_url: str | None = None  # an OpenLineage HTTP endpoint the run events go to
    openlineage_interval_s: float = 300.0  # how often what changed is pushed there
    rollout_wake_seconds: float = ROLLOUT_WAKE_SECONDS  # an ack wakes the ticker this much later


def plaintext_exposures(o: ServeOptions) -> list[str]:
    """What would carry credentials in clear off this host with these options."""
    found = []
    grpc_host = split_host_port(o.grpc_address)[0]
    if o.grpc_tls is None and not is_loopback(grpc_host):
        found.append(f"gRPC on {o.grpc_address} without TLS")
    if o.mqtt and o.mqtt_external is None and o.mqtt_tls is None and not is_loopback(o.mqtt_host):
        found.append(f"MQTT on {o.mqtt_host}:{o.mqtt_port} without TLS")
    if o.http_address is not None and not is_loopback(split_host_port(o.http_address)[0]):
        # waitress speaks plain HTTP: off this host, a TLS proxy goes in front (docs/api.md)
        found.append(f"the REST API on {o.http_address} (plain HTTP; bearer tokens in clear)")
    ext = o.mqtt_external
    if ext is not None and not (ext.tls or ext.ca_cert) and not is_loopback(ext.host):
        found.append(f"MQTT bridge to {ext.host}:{ext.port} without TLS")
    return found


def check_plaintext(o: ServeOptions) -> list[str]:
    """Refuse plaintext off this host unless ``insecure``; what runs in clear (to warn of)."""
    exposures = plaintext_exposures(o)
    if exposures and not o.insecure:
        raise InsecureListener(
            f"refusing to serve {'; '.join(exposures)}: enrollment tokens and device "
            "credentials would travel in clear. Pass --tls-cert/--tls-key (make them with "
            "`fleetcast certs init --host HOST`), or --insecure to accept plaintext"
        )
    return exposures


def write_insecure_notice(data_dir: Path, exposures: list[str]) -> None:
    """Record what serve runs in clear (nothing: remove the record) for `devices list`."""
    marker = data_dir / INSECURE_MARKER
    if exposures:
        marker.write_text(json.dumps({"exposures": exposures}))
    else:
        marker.unlink(missing_ok=True)


def insecure_notice(data_dir: Path) -> str | None:
    """The warning `fleetcast devices list` shows while serve runs with --insecure."""
    marker = data_dir / INSECURE_MARKER
    try:
        exposures = json.loads(marker.read_text())["exposures"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return "fleetcast serve runs with --insecure: " + "; ".join(map(str, exposures))


class ControlPlane:
    """Everything `fleetcast serve` runs, startable and stoppable from tests."""

    def __init__(self, options: ServeOptions) -> None:
        self.options = options
        self.app: Flask | None = None
        self.services: Fleetcast | None = None
        self.grpc: grpc.Server | None = None
        self.grpc_port = 0
        self.servicer: AgentServicer | None = None
        self.http: HttpHandle | None = None
        self.streams = StreamRegistry()
        self.broker: MosquittoBroker | None = None
        self.bridge: MqttBridge | None = None
        self.dispatcher: ChangeDispatcher | None = None
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        self.rollouts: RolloutService | None = None
        self._ticker: threading.Thread | None = None
        self.alerts: AlertService | None = None
        self.retention: RetentionService | None = None
        self.lineage_pusher: OpenLineagePusher | None = None
        self._monitor: threading.Thread | None = None

    def start(self) -> ControlPlane:
        o = self.options
        exposures = check_plaintext(o)
        settings = Settings(
            data_dir=o.data_dir,
            store=":memory:" if o.in_memory_store else o.store,
            public_key=o.public_key,
        )
        self.app = create_app(settings)
        services = self.services = services_of(self.app)
        if not services.packages.trusted_keys():
            logger.warning(
                "no package signing key at %s yet: `fleetcast deploy` needs it "
                "(run `fleetcast keys generate`)",
                settings.key_dir,
            )
        self.dispatcher = ChangeDispatcher(services.notifier, services.commands, services.devices)
        self.dispatcher.on_pending.append(self.streams.deliver)
        self.dispatcher.on_revoked.append(self.streams.revoke)
        self.grpc, self.grpc_port, self.servicer = start_grpc_server(
            services, self.streams, o.grpc_address, o.grpc_tls, o.grpc_workers
        )
        if o.mqtt:
            self._start_mqtt()
        self.dispatcher.start()
        if o.http_address is not None:
            self._start_http(settings, o.http_address)
        for exposure in exposures:
            logger.warning("--insecure: serving %s; credentials travel in clear", exposure)
        write_insecure_notice(o.data_dir, exposures)
        self._flusher = threading.Thread(target=self._flush_loop, name="activity", daemon=True)
        self._flusher.start()
        self._start_rollouts()
        self._start_monitoring()
        return self

    def _start_monitoring(self) -> None:
        """Alert evaluation, notification retries and retention on one timer."""
        assert self.services is not None
        o = self.options
        self._alert_service()
        self.retention = RetentionService(self.services.repos, o.retention)
        if o.openlineage_url:
            from control_plane.monitoring.openlineage import OpenLineagePusher

            alerts = self._alert_service()
            lineage = LineageService(self.services.repos, alerts.monitoring.manifest, alerts.alerts)
            self.lineage_pusher = OpenLineagePusher(lineage.run_events, o.openlineage_url)
        if o.alert_interval_s > 0 or o.retention.interval_s > 0 or self.lineage_pusher:
            self._monitor = threading.Thread(
                target=self._monitor_loop, name="monitoring", daemon=True
            )
            self._monitor.start()

    def _alert_service(self) -> AlertService:
        """The REST API's alert service, or (no API) this process's own."""
        assert self.services is not None
        if self.alerts is None:
            repos = self.services.repos
            audit = AuditService(repos.audit)
            self.alerts = AlertService(
                MonitoringService(repos, audit),
                notifications=self.options.alert_notifications or Notifications(),
                audit=audit,
            )
        return self.alerts

    def _monitor_loop(self) -> None:
        assert self.alerts is not None and self.retention is not None
        o = self.options
        clock = self.alerts.monitoring.clock
        jobs: list[tuple[float, Callable[[float], object], str]] = [
            (o.alert_interval_s, self.alerts.evaluate, "alert evaluation"),
            (min(DELIVERY_SECONDS, o.alert_interval_s), self.alerts.deliver_due, "alert delivery"),
            (o.retention.interval_s, self.retention.run, "telemetry retention"),
        ]
        if self.lineage_pusher is not None:
            jobs.append((o.openlineage_interval_s, self.lineage_pusher.push, "OpenLineage push"))
        due = [clock() + every if every > 0 else float("inf") for every, _, _ in jobs]
        step = min(every for every, _, _ in jobs if every > 0)
        while not self._stop.wait(max(0.05, min(step, min(due) - clock()))):
            for i, (every, job, name) in enumerate(jobs):
                now = clock()
                if now < due[i]:
                    continue
                due[i] = now + every
                try:
                    job(now)
                except Exception:  # the store may be unreachable for a while: next time
                    logger.exception("%s", name)

    def _start_rollouts(self) -> None:
        """Apply what a crash left in the rollouts' outboxes, then step them every few seconds."""
        assert self.services is not None
        services = self.services
        self.rollouts = RolloutService(
            services.repos,
            AuditService(services.repos.audit),
            services.commands,
            drift=WaveDrift(self._alert_service()),  # drift gate: wave drift, firing alerts
            drift_alerts=AlertDrift(self._alert_service()),  # firing alerts, named
        )
        recovered = self.rollouts.recover_all()
        if recovered:
            logger.info("rollouts: re-applied %d action(s) left by a stop", recovered)
        if self.options.rollout_tick_seconds > 0:
            self._ticker = threading.Thread(target=self._tick_loop, name="rollouts", daemon=True)
            self._ticker.start()

    def _tick_loop(self) -> None:
        """Tick every rollout each ``rollout_tick_seconds``, and soon after commands change.

        An ack is a ``commands`` change in the store: the ticker wakes ``rollout_wake_seconds``
        later (acks arriving meanwhile ride along), so a wave's next devices go out as soon
        as installs finish rather than at the next period. The deploys a tick queues wake
        the next tick too, and that is wanted: their acks typically arrive while the tick
        is still running (dropping the tick's own notifications dropped those, and the
        rollout moved at the period's pace). While commands flow the ticker runs at most
        every ``rollout_wake_seconds``; once they stop, at the period, or sooner at the
        earliest deadline ``tick_all`` returns (a bake's end, a device's timeout).
        """
        assert self.rollouts is not None and self.services is not None
        subscription = self.services.notifier.subscribe()
        o = self.options
        deadline: float | None = None
        try:
            while not self._stop.wait(o.rollout_wake_seconds):
                period = o.rollout_tick_seconds
                if deadline is not None:  # a bake ends or a device times out before the period
                    period = max(0.0, min(period, deadline - time.time()))
                if not self._wait_for_change(subscription, period):
                    break
                try:
                    deadline = self.rollouts.tick_all()
                except Exception:  # the store may be unreachable for a while: try next tick
                    logger.exception("rollouts ticker")
                    deadline = None
        finally:
            subscription.close()

    def _wait_for_change(self, subscription: Subscription, period: float) -> bool:
        """Until commands change or ``period`` passes; False once stopping."""
        deadline = time.monotonic() + period
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            topics = subscription.wait(min(left, 0.5))
            if COMMANDS in topics or ANY in topics:
                return True
        return False

    def _start_http(self, settings: Settings, address: str) -> None:
        """The REST API on the same app and services as gRPC and MQTT, behind waitress."""
        from control_plane.api import ApiOptions, register_api
        from control_plane.api.serve import serve_http

        assert self.app is not None and self.services is not None
        context = register_api(
            self.app,
            self.services.repos,
            settings,
            ApiOptions(alert_notifications=self.options.alert_notifications),
            fleet=self.services,
        )
        self.alerts = context.alerts  # the timer and POST /alerts/evaluate share one service
        host, port = split_host_port(address)
        self.http = serve_http(self.app, host, int(port))

    @property
    def http_port(self) -> int | None:
        return self.http.port if self.http is not None else None

    def _flush_loop(self) -> None:
        """Write the batched last-seen times and quota refusals every few seconds."""
        while not self._stop.wait(FLUSH_SECONDS):
            try:
                assert self.services is not None
                self.services.devices.flush_activity()
            except Exception:  # kept for the next flush
                logger.exception("writing device activity")
            try:  # a rotated signing key is retired once every device acked the rotation
                assert self.services is not None
                for key in self.services.keys.retire_acked():
                    logger.info("signing key %s retired: every device trusts its successor", key)
            except Exception:
                logger.exception("retiring signing keys")

    def _start_mqtt(self) -> None:
        o = self.options
        assert self.services is not None and self.dispatcher is not None
        endpoint = o.mqtt_external
        if endpoint is None:
            broker = self.broker = MosquittoBroker(
                o.data_dir / "mosquitto", host=o.mqtt_host, port=o.mqtt_port, tls=o.mqtt_tls
            )
            broker.start()
            self.services.enrollment.logins = broker
            self.dispatcher.on_revoked.append(self._remove_login)
            endpoint = MqttEndpoint(
                o.mqtt_host if o.mqtt_host not in ("", "0.0.0.0", "::") else "127.0.0.1",
                broker.port,
                CONTROL_PLANE_USER,
                broker.password,
                tls=o.mqtt_tls is not None,
                ca_cert=str(o.mqtt_tls.ca) if o.mqtt_tls and o.mqtt_tls.ca else None,
            )
            if o.mqtt_tls is not None and o.mqtt_tls.require_client_cert:
                # mutual TLS: the bridge presents the server's certificate as its own
                endpoint = dataclasses.replace(
                    endpoint, client_cert=str(o.mqtt_tls.cert), client_key=str(o.mqtt_tls.key)
                )
        self.bridge = MqttBridge(self.services, endpoint)
        self.dispatcher.on_pending.append(self.bridge.publish_pending)
        self.dispatcher.on_revoked.append(self.bridge.forget)
        self.bridge.start()

    def _remove_login(self, device_id: str) -> None:
        """A revoked device's broker login goes (mosquitto drops its connection on reload)."""
        if self.broker is not None and device_login(device_id) in self.broker.logins():
            self.broker.remove_device(device_id)

    def restart_grpc(self) -> None:
        """Stop the gRPC server and start it again on the same port (tests cut transfers so)."""
        assert self.services is not None and self.grpc is not None
        self.grpc.stop(grace=None).wait(5)
        address = f"127.0.0.1:{self.grpc_port}"
        self.grpc, port, servicer = start_grpc_server(
            self.services, self.streams, address, self.options.grpc_tls, self.options.grpc_workers
        )
        assert port == self.grpc_port
        if self.servicer is not None:  # keep counting transfers across the restart
            servicer.transfers = self.servicer.transfers
        self.servicer = servicer

    @property
    def mqtt_port(self) -> int | None:
        if self.broker is not None:
            return self.broker.port
        return self.options.mqtt_external.port if self.options.mqtt_external else None

    def stop(self) -> None:
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join(5)
        if self._ticker is not None:
            self._ticker.join(10)
        if self._monitor is not None:
            self._monitor.join(10)
        write_insecure_notice(self.options.data_dir, [])
        if self.http is not None:
            self.http.stop()
        if self.dispatcher is not None:
            self.dispatcher.stop()
        if self.bridge is not None:
            self.bridge.stop()
        if self.broker is not None:
            self.broker.stop()
        if self.grpc is not None:
            self.grpc.stop(grace=1).wait(5)
        if self.services is not None:
            try:
                self.services.devices.flush_activity()
            except ControlPlaneError as exc:
                logger.warning("last-seen times not written at stop: %s", exc)
            self.services.close()


class ServeProcess:
    """`fleetcast serve --mqtt` as a child process on free loopback ports.

    For benchmarks and tests that need the control plane in its own process,
    as operators run it; ``env`` is the environment to give the admin CLI.
    """

    def __init__(self, data_dir: Path, *extra: str) -> None:
        self.env = {
            **os.environ,
            "FLEETCAST_DATA_DIR": str(data_dir),
            "PATH": os.environ.get("PATH", "") + ":/usr/sbin",
        }
        command = [sys.executable, "-m", "control_plane", "serve", "--grpc", "127.0.0.1:0",
                   "--mqtt", "--mqtt-port", "0", "--http", "127.0.0.1:0", *extra]  # fmt: skip
        self.proc = subprocess.Popen(command, env=self.env, stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        seen, match = "", None
        while line := self.proc.stderr.readline():  # warnings may come first
            seen += line
            if match := re.search(
                r"gRPC on port (\d+), MQTT on port (\d+), HTTP on port (\d+)", line
            ):
                break
        if not match:
            self.proc.kill()
            raise RuntimeError(f"fleetcast serve did not start: {seen}{self.proc.stderr.read()}")
        self.grpc_port, self.mqtt_port = int(match.group(1)), int(match.group(2))
        self.http_port = int(match.group(3))
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()

    def stop(self) -> int:
        """SIGTERM and wait; the exit code (0 for a clean shutdown)."""
        self.proc.terminate()
        return self.proc.wait(20)
