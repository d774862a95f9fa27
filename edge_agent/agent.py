"""The agent daemon: wires slots, installer, runtime, telemetry, outbox and transport.

Threads: a ticker (closes telemetry windows on their timer, runs the health
watch, flushes the outbox through the transport) and a command loop (polls
the transport for commands). Scoring runs on the caller's thread (the local
gRPC server's pool), so concurrent Predict calls run concurrently.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from edge_agent.commands import CommandLog, CommandResult
from edge_agent.core.health import HealthDecision, HealthPolicy, evaluate_health
from edge_agent.core.keyrotation import COMMAND_KIND as ROTATE_KEY
from edge_agent.core.limits import MAX_BATCH_MESSAGES
from edge_agent.core.telemetry import ModelTelemetry, TelemetryConfig
from edge_agent.errors import EdgeError, InstallError, NotFound, PackageError
from edge_agent.files import open_private
from edge_agent.host import detect_host
from edge_agent.install import Installer
from edge_agent.outbox import Outbox
from edge_agent.package import Package, load_public_key, read_package_file
from edge_agent.reporting import Reporter
from edge_agent.runtime import Model, load_model_bytes
from edge_agent.settings import Settings
from edge_agent.slots import Pointer, model_stores
from edge_agent.transport.base import Command, Transport, TransportError
from edge_agent.trust import TrustStore
from edge_agent.watchlist import Watch, WatchList

if TYPE_CHECKING:
    from edge_agent.core.manifest import Manifest

logger = logging.getLogger(__name__)


class StateLocked(EdgeError):
    """Another agent process holds this state directory."""


class Agent:
    """One device's agent. ``start()`` recovers the state directory and loads models."""

    def __init__(
        self,
        settings: Settings,
        transport: Transport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.transport = transport
        self.clock = clock
        self.policy = HealthPolicy(
            bake_seconds=settings.bake_seconds,
            min_requests=settings.health_min_requests,
            max_error_rate=settings.health_max_error_rate,
            max_latency_ratio=settings.health_max_latency_ratio,
        )
        self.telemetry_config = TelemetryConfig(
            capture_rate=settings.capture_rate, max_captures=settings.max_captures
        )
        self.models: dict[str, Model] = {}
        self.unloaded: set[str] = set()
        self._lock = threading.RLock()
        self._install_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock_file: IO[str] | None = None
        self.outbox: Outbox | None = None
        self.reporter: Reporter | None = None
        self.window_seconds = settings.window_seconds  # the control plane may change it

    # -- life cycle

    def start(self, background: bool = True) -> None:
        state = self.settings.state_dir
        state.mkdir(parents=True, exist_ok=True)
        self._lock_file = os.fdopen(open_private(state / "agent.lock"), "w")  # held for life
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise StateLocked(f"another agent is running on {state}") from exc
        self.outbox = Outbox(state / "outbox.sqlite", self.settings.outbox_quota_bytes)
        self.reporter = Reporter(
            self.outbox, self.transport, self.settings.device_id, clock=self.clock
        )
        self._command_log = CommandLog(state / "commands.sqlite")
        self.watchlist = WatchList(state / "health-watches.json")
        self.trust = TrustStore(load_public_key(self.settings.public_key), state)
        self.installer = Installer(
            state,
            self.trust,
            detect_host(),
            self._make_model,
            self._report,
            self._checkpoint,
        )
        for store in model_stores(state):
            model = self.installer.recover(store)
            if model is not None:
                self.models[store.model_name] = model
        logger.info("agent %s serving %s", self.settings.device_id, sorted(self.models) or "none")
        if background:
            self._spawn(self._tick_loop, "fleetcast-ticker")
            if self.transport is not None:
                self._spawn(self._command_loop, "fleetcast-commands")

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self.flush_windows()
        if self.outbox is not None:
            self.outbox.close()
        if hasattr(self, "_command_log"):
            self._command_log.close()
        if self._lock_file is not None:
            self._lock_file.close()

    def _checkpoint(self, step: str) -> None:
        if step == self.settings.crash_at:
            logger.error("crash hook: SIGKILL at install step %s", step)
            os.kill(os.getpid(), signal.SIGKILL)

    def _make_model(self, package: Package[Manifest]) -> Model:
        m = package.manifest
        loaded = load_model_bytes(
            m.runtime,
            package.model_bytes,
            m.signature,
            self.settings.threads,
            m.profile.execution_providers,
        )
        telemetry = ModelTelemetry(m, self.telemetry_config, clock=self.clock)
        return Model(package, loaded, "reject", telemetry)

    def _report(self, fields: dict[str, Any], dedupe_key: str) -> None:
        assert self.reporter is not None
        self.reporter.status(fields, dedupe_key)

    # -- scoring API

    def model(self, name: str) -> Model:
        model = self.models.get(name)
        if model is None:
            raise NotFound(f"model {name!r} is not loaded")
        return model

    def predict(self, name: str, inputs: Mapping[str, object]) -> tuple[dict[str, np.ndarray], str]:
        return self.model(name).predict_with_id(inputs)

    def capture(
        self,
        name: str,
        inputs: Mapping[str, np.ndarray],
        outputs: Mapping[str, np.ndarray],
        prediction_id: str,
    ) -> bool:
        model = self.model(name)
        assert model.telemetry is not None
        return model.telemetry.capture(inputs, outputs, prediction_id)

    def installed(self) -> dict[str, Pointer]:
        return {
            s.model_name: p
            for s in model_stores(self.settings.state_dir)
            if (p := s.pointer()) is not None
        }

    def load_model(self, name: str, package: Path | None = None) -> Model:
        """Install ``package`` (a local file) if given, else load the installed version."""
        if package is not None:
            model = self.install_file(package)
            if model.manifest.model_name != name and name:
                logger.warning("package holds model %r, not %r", model.manifest.model_name, name)
            return model
        with self._lock:
            if name in self.models:
                return self.models[name]
            model_or_none = self.installer.load_active(self.installer.store(name))
            if model_or_none is None:
                raise NotFound(f"model {name!r} is not installed")
            self.models[name] = model_or_none
            self.unloaded.discard(name)
            return model_or_none

    def unload_model(self, name: str) -> None:
        with self._lock:
            model = self.models.pop(name, None)
            if model is None:
                raise NotFound(f"model {name!r} is not loaded")
            self.unloaded.add(name)
            self._enqueue_window(model)

    # -- installs

    def install_file(self, path: Path) -> Model:
        try:
            data = read_package_file(path)
        except PackageError as exc:
            raise InstallError("verify", exc.detail, exc.check) from exc
        return self.install_bytes(data, source=str(path.resolve()))

    def install_bytes(
        self,
        data: bytes,
        *,
        source: str | None = None,
        expected_sha256: str | None = None,
        context: dict[str, Any] | None = None,
    ) -> Model:
        with self._install_lock:
            active = self._active_model(hashlib.sha256(data).hexdigest())
            if active is not None:  # the same package again: no slot is touched
                return active
            model = self.installer.install(
                data, source=source, expected_sha256=expected_sha256, context=context
            )
            name = model.manifest.model_name
            with self._lock:
                old = self.models.get(name)
                self.models[name] = model
                self.unloaded.discard(name)
                self.watchlist.start(
                    name,
                    Watch(
                        self.clock(),
                        old.telemetry.health() if old is not None and old.telemetry else None,
                        model.manifest.package_id,
                    ),
                )
            if old is not None:
                self._enqueue_window(old)
            return model

    def _active_model(self, sha256: str) -> Model | None:
        """The model whose active slot holds package ``sha256`` (loaded if need be), if any."""
        for name, pointer in self.installed().items():
            if pointer.active.sha256 == sha256:
                logger.info("package %s is already active for %s: nothing to do", sha256[:12], name)
                return self.load_model(name)
        return None

    def handle_command(self, command: Command) -> None:
        """Run a control-plane command once per execution version, then ack it.

        The version is recorded before the command runs, and its result after;
        a command whose version already ran is acked again with the result it
        had, and not run twice; one a crash interrupted runs again (deploy is
        idempotent). A failure of the device's own storage (disk full) is acked
        as the command's failure reason. Kinds: ``deploy`` (``install``),
        ``rollback``, ``config``, ``capture``, ``rotate_key`` (trust a new
        signing key, if a trusted key signed the message: ``edge_agent/trust.py``).
        """
        log = self._command_log
        version = command.execution_version
        try:
            done = log.result(version) if version else None
            if done is None:
                interrupted = bool(version) and log.start(version, command.id)
                if interrupted:
                    logger.warning("command %s (version %d) was interrupted", command.id, version)
                done = self._execute(command, interrupted)
                if version:
                    log.record(version, command.id, done)
            else:
                logger.info("command %s (version %d) already executed", command.id, version)
        except (sqlite3.Error, OSError) as exc:
            logger.error("command %s: device storage failed: %s", command.id, exc)
            done = CommandResult(
                False, f"device storage failed: {exc}", {"kind": command.type, "step": "storage"}
            )
        if self.transport is not None:
            self.transport.ack(command, done.ok, done.error, done.detail)

    def _execute(self, command: Command, interrupted: bool = False) -> CommandResult:
        kind = command.type
        try:
            if kind in ("deploy", "install"):
                return self._deploy(command)
            if kind == "rollback":
                name = str(command.body.get("model_name", ""))
                pointer = self.installer.store(name).pointer()
                if interrupted and pointer and pointer.note.startswith("rolled back from"):
                    # the first run switched, then the agent died before the ack
                    return CommandResult(True, "", {"package_id": pointer.active.package_id})
                with self._install_lock:
                    model = self.installer.rollback(
                        self.installer.store(name), str(command.body.get("reason", "operator"))
                    )
                    with self._lock:
                        self.models[name] = model
                return CommandResult(True, "", {"package_id": model.manifest.package_id})
            if kind == "capture":
                rate = float(command.body.get("rate", 0.0))
                if not 0.0 <= rate <= 1.0:
                    raise ValueError(f"capture rate {rate} is not within [0, 1]")
                self.telemetry_config = replace(self.telemetry_config, capture_rate=rate)
                for model in list(self.models.values()):
                    if model.telemetry is not None:
                        model.telemetry.set_capture_rate(rate)
                return CommandResult(True, "", {"capture_rate": rate})
            if kind == ROTATE_KEY:
                learned = self.trust.accept_rotation(command.body)
                return CommandResult(True, "", {"key_id": learned, "trusted": self.trust.key_ids})
            if kind == "config":
                window = float(command.body.get("window_seconds", self.window_seconds))
                if window <= 0:
                    raise ValueError(f"window_seconds {window} is not positive")
                self.window_seconds = window
                return CommandResult(True, "", {"window_seconds": window})
        except (EdgeError, ValueError, TypeError) as exc:
            return CommandResult(False, str(exc), {"kind": kind})
        self._report(
            {
                "event": "command_rejected",
                "command_id": command.id,
                "reason": f"unknown command {kind!r}",
            },
            f"command:{command.id}",
        )
        return CommandResult(False, f"unknown command kind {kind!r}", {})

    def _deploy(self, command: Command) -> CommandResult:
        ref = str(command.body.get("sha256") or command.body.get("ref") or "")
        with self._install_lock:
            active = self._active_model(ref) if ref else None
        if active is not None:  # re-sent, or deployed twice: nothing to download or install
            m = active.manifest
            return CommandResult(
                True,
                "",
                {
                    "package_id": m.package_id,
                    "model_name": m.model_name,
                    "release": m.release,
                    "note": "already active",
                },
            )
        reason = self.watchlist.quarantine.get(ref)
        if reason is not None and not command.body.get("force"):
            return CommandResult(
                False,
                f"package {ref[:16]} was rolled back on this device after a health breach "
                f"({reason}); deploy it with force=true to install it again",
                {"step": "quarantine"},
            )
        try:
            assert self.transport is not None
            data = self.transport.fetch_package(ref)
        except TransportError as exc:
            self._report(
                {
                    "event": "install_failed",
                    "command_id": command.id,
                    "step": "download",
                    "check": None,
                    "reason": str(exc),
                },
                f"command:{command.id}:download",
            )
            return CommandResult(False, f"download: {exc}", {"step": "download"})
        try:
            model = self.install_bytes(
                data, expected_sha256=command.body.get("sha256"), context={"command_id": command.id}
            )
        except InstallError as exc:
            logger.warning("command %s: %s", command.id, exc)
            return CommandResult(False, str(exc), {"step": exc.step, "check": exc.check})
        m = model.manifest
        return CommandResult(
            True, "", {"package_id": m.package_id, "model_name": m.model_name, "release": m.release}
        )

    # -- health watch

    def check_health(self) -> dict[str, HealthDecision]:
        """Evaluate every running watch; roll back the models that breached."""
        decisions: dict[str, HealthDecision] = {}
        now = self.clock()
        for name, watch in list(self.watchlist.watches.items()):
            model = self.models.get(name)
            if (
                model is None
                or model.telemetry is None
                or model.manifest.package_id != watch.package_id
            ):
                self.watchlist.end(name)
                continue
            decision = evaluate_health(
                self.policy, watch.baseline, model.telemetry.health(), now - watch.started_at
            )
            decisions[name] = decision
            if decision.verdict == "pending":
                continue
            self.watchlist.end(name)
            if decision.verdict == "healthy":
                self._report(
                    {
                        "event": "healthy",
                        "model_name": name,
                        "package_id": watch.package_id,
                        "reason": decision.reason,
                    },
                    f"healthy:{watch.package_id}:{watch.started_at}",
                )
                continue
            with self._install_lock:
                try:
                    previous = self.installer.rollback(
                        self.installer.store(name), decision.reason, "health"
                    )
                except InstallError as exc:
                    logger.error("%s: health breached but cannot roll back: %s", name, exc)
                    continue
                with self._lock:
                    self.models[name] = previous
                self.watchlist.add_quarantine(model.package.sha256, decision.reason)
            self._enqueue_window(model)
        return decisions

    # -- telemetry and outbox

    def _enqueue_window(self, model: Model) -> None:
        if self.reporter is not None:
            self.reporter.record(model.telemetry)

    def flush_windows(self) -> None:
        for model in list(self.models.values()):
            self._enqueue_window(model)

    def send_outbox(self, batch: int = MAX_BATCH_MESSAGES) -> int:
        """Deliver pending messages (see :meth:`edge_agent.reporting.Reporter.flush`)."""
        if self.reporter is None:
            return 0
        return self.reporter.flush(batch=batch)

    def _tick_loop(self) -> None:
        s = self.settings
        next_window = self.clock() + self.window_seconds
        next_send = 0.0
        while not self._stop.wait(0.2):
            now = self.clock()
            try:
                self.check_health()
                if now >= next_window:
                    self.flush_windows()
                    next_window = now + self.window_seconds
                if now >= next_send:
                    self.send_outbox()
                    next_send = now + s.send_interval_seconds
            except Exception:  # the ticker must outlive any one failure
                logger.exception("agent ticker")

    def _command_loop(self) -> None:
        assert self.transport is not None
        while not self._stop.is_set():
            try:
                commands = self.transport.poll_commands(timeout=0.5)
            except TransportError as exc:
                logger.info("commands: %s", exc)
                self._stop.wait(1.0)
                continue
            for command in commands:
                try:
                    self.handle_command(command)
                except Exception:
                    logger.exception("command %s", command.id)
