"""The fleet: enrollment, device credentials, commands, package catalog, uploads.

Transports (gRPC, MQTT) and, later, the REST API all call this one service, so
a rule (a revoked device is refused; an upload is stored exactly once per
(device id, sequence)) holds whatever way a message arrived.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from control_plane.enrollment import (
    DEFAULT_TOKEN_TTL,
    Clock,
    Credentials,
    Enrollment,
    check_device_id,
)
from control_plane.errors import InvalidInput, NotFound, ResourceExhausted
from control_plane.quotas import MAX_UPLOAD_BYTES, IngestQuota, QuotaLimits
from control_plane.store.db import Store
from edge_agent.errors import PackageError
from edge_agent.package import open_package

logger = logging.getLogger(__name__)

COMMAND_KINDS = frozenset({"deploy", "rollback", "config", "capture"})
UPLOAD_KINDS = frozenset({"telemetry_window", "status"})
__all__ = ["Credentials", "Fleet", "check_device_id"]


@dataclass(frozen=True)
class CommandRecord:
    id: str
    device_id: str
    execution_version: int
    kind: str
    body: dict[str, Any]
    status: str


@dataclass(frozen=True)
class UploadResult:
    acked: list[int]
    rejected: list[int]
    errors: list[str]


DeviceHook = Callable[[str, str], None]  # (device id, mqtt password or "")


class Fleet:
    """Devices, commands, packages and uploads over one :class:`Store`."""

    def __init__(
        self,
        store: Store,
        public_key: Ed25519PublicKey | None,
        package_dir: Path,
        clock: Clock = time.time,
        quota: QuotaLimits | None = None,
    ) -> None:
        self.store = store
        self.public_key = public_key
        self.package_dir = package_dir
        self.clock = clock
        self.enrollment = Enrollment(store, clock)
        self.quota = IngestQuota(quota or QuotaLimits(), time.monotonic)
        self._seen: dict[str, float] = {}  # last-seen times not yet written (flush_activity)
        self._refused: dict[str, int] = {}  # uploads refused over quota, not yet written
        self._activity_lock = threading.Lock()
        self._changed = threading.Condition()
        self._data_version: int | None = None
        self.on_enroll: list[DeviceHook] = []
        self.on_revoke: list[DeviceHook] = []
        self.on_command: list[Callable[[CommandRecord], None]] = []

    # -- audit

    def audit(self, actor: str, action: str, subject: str, **detail: Any) -> None:
        with self.store.session():
            self.store.db.table("audit").insert(
                {
                    "at": self.clock(),
                    "actor": actor,
                    "action": action,
                    "subject": subject,
                    "detail_json": json.dumps(detail, sort_keys=True),
                }
            )

    # -- enrollment and credentials

    def create_enrollment_token(
        self, actor: str, device_id: str | None = None, ttl: float = DEFAULT_TOKEN_TTL
    ) -> str:
        """A one-time token, valid ``ttl`` seconds (bound to ``device_id`` if given)."""
        token = self.enrollment.create_token(device_id, ttl)
        self.audit(actor, "enrollment_token.create", device_id or "*", ttl=ttl)
        return token

    def enroll(self, token: str, device_id: str, host: dict[str, Any]) -> Credentials:
        creds = self.enrollment.redeem(token, device_id, host)
        try:
            for hook in self.on_enroll:
                hook(device_id, creds.mqtt_password)
        except Exception:
            self.enrollment.undo(device_id)
            raise
        self.audit(f"device:{device_id}", "device.enroll", device_id)
        return creds

    def authenticate(self, device_token: str) -> str:
        """The device id a credential belongs to; Unauthenticated if unknown or revoked."""
        return self.enrollment.authenticate(device_token)

    def is_active(self, device_id: str) -> bool:
        with self.store.session():
            rows = list(self.store.db.table("devices").rows_where("id = ?", [device_id]))
        return bool(rows) and rows[0]["status"] == "active"

    def revoke(self, device_id: str, actor: str) -> None:
        with self.store.session():
            devices = self.store.db.table("devices")
            if not list(devices.rows_where("id = ?", [device_id])):
                raise NotFound(f"device {device_id!r} is not enrolled")
            devices.update(device_id, {"status": "revoked", "revoked_at": self.clock()})
        for hook in self.on_revoke:
            hook(device_id, "")
        self.audit(actor, "device.revoke", device_id)
        with self._changed:
            self._changed.notify_all()

    def devices(self) -> list[dict[str, Any]]:
        keys = ("id", "status", "enrolled_at", "revoked_at", "last_seen", "uploads_refused")
        with self.store.session() as db:
            rows: list[dict[str, Any]] = [
                {k: r.get(k) for k in keys} for r in db.table("devices").rows_where(order_by="id")
            ]
        with self._activity_lock:
            for row in rows:
                row["last_seen"] = self._seen.get(row["id"], row["last_seen"])
                row["uploads_refused"] = (row["uploads_refused"] or 0) + self._refused.get(
                    row["id"], 0
                )
        return rows

    def touch(self, device_id: str) -> None:
        """Note that a device was seen; written in batches by :meth:`flush_activity`."""
        with self._activity_lock:
            self._seen[device_id] = self.clock()

    def flush_activity(self) -> None:
        """Write the last-seen times and quota refusals gathered since the last flush."""
        with self._activity_lock:
            seen, self._seen = self._seen, {}
            refused, self._refused = self._refused, {}
        if not seen and not refused:
            return
        try:
            with self.store.session() as db, db.conn:
                for device_id, at in seen.items():
                    db.execute("UPDATE devices SET last_seen = ? WHERE id = ?", [at, device_id])
                for device_id, count in refused.items():
                    db.execute(
                        "UPDATE devices SET uploads_refused = COALESCE(uploads_refused, 0) + ? "
                        "WHERE id = ?",
                        [count, device_id],
                    )
        except Exception:
            with self._activity_lock:  # keep them for the next flush
                for device_id, at in seen.items():
                    self._seen.setdefault(device_id, at)
                for device_id, count in refused.items():
                    self._refused[device_id] = self._refused.get(device_id, 0) + count
            raise

    # -- packages

    def add_package(self, path: Path, actor: str) -> str:
        """Register a signed package file (verified first); returns its sha256."""
        if self.public_key is None:
            raise InvalidInput(
                "no package signing public key: run `fleetcast keys generate` "
                "(or copy the compile host's fleetcast.pub into <data dir>/keys/)"
            )
        try:
            package = open_package(path, self.public_key)
        except PackageError as exc:
            raise InvalidInput(f"package {path}: {exc}") from exc
        m = package.manifest
        self.package_dir.mkdir(parents=True, exist_ok=True)
        stored = self.package_dir / f"{package.sha256}.fcpkg"
        if not stored.exists():
            stored.write_bytes(path.read_bytes())
        with self.store.session():
            self.store.db.table("packages").upsert(
                {
                    "sha256": package.sha256,
                    "package_id": m.package_id,
                    "model_name": m.model_name,
                    "model_version": m.model_version,
                    "profile_id": m.profile.id,
                    "release": m.release,
                    "size_bytes": package.size_bytes,
                    "path": str(stored),
                    "created_at": self.clock(),
                },
                pk="sha256",
            )
        self.audit(actor, "package.add", package.sha256, package_id=m.package_id)
        return package.sha256

    def package(self, sha256: str) -> dict[str, Any]:
        with self.store.session():
            rows = list(self.store.db.table("packages").rows_where("sha256 = ?", [sha256]))
        if not rows:
            raise NotFound(f"package {sha256} is not in the catalog")
        return dict(rows[0])

    def package_path(self, sha256: str) -> Path:
        return Path(self.package(sha256)["path"])

    def package_for_device(self, device_id: str, sha256: str) -> Path:
        """The file of a catalog package a deploy command sent to this device; else NotFound."""
        path = self.package_path(sha256)
        with self.store.session() as db:
            rows = list(
                db.query(
                    "SELECT 1 FROM commands WHERE device_id = ? AND kind = 'deploy' "
                    "AND json_extract(body_json, '$.sha256') = ? LIMIT 1",
                    [device_id, sha256],
                )
            )
        if not rows:
            raise NotFound(f"package {sha256} was never deployed to device {device_id!r}")
        return path

    # -- commands

    def send_command(
        self, device_id: str, kind: str, body: dict[str, Any], actor: str
    ) -> CommandRecord:
        if kind not in COMMAND_KINDS:
            raise InvalidInput(f"command kind {kind!r}: expected one of {sorted(COMMAND_KINDS)}")
        if kind == "deploy":
            package = self.package(str(body.get("sha256", "")))
            body = {
                **body,
                "package_id": package["package_id"],
                "size_bytes": package["size_bytes"],
            }
        with self.store.session():
            devices = self.store.db.table("devices")
            rows = list(devices.rows_where("id = ?", [device_id]))
            if not rows:
                raise NotFound(f"device {device_id!r} is not enrolled")
            version = int(rows[0]["next_version"])
            devices.update(device_id, {"next_version": version + 1})
            record = CommandRecord(uuid.uuid4().hex, device_id, version, kind, body, "pending")
            self.store.db.table("commands").insert(
                {
                    "id": record.id,
                    "device_id": device_id,
                    "execution_version": version,
                    "kind": kind,
                    "body_json": json.dumps(body, sort_keys=True),
                    "status": "pending",
                    "created_at": self.clock(),
                }
            )
        self.audit(actor, f"command.{kind}", device_id, command_id=record.id, **body)
        for hook in self.on_command:
            hook(record)
        with self._changed:
            self._changed.notify_all()
        return record

    def pending_commands(self, device_id: str) -> list[CommandRecord]:
        with self.store.session():
            rows = self.store.db.table("commands").rows_where(
                "device_id = ? AND status = 'pending'", [device_id], order_by="execution_version"
            )
            return [_command(r) for r in rows]

    def all_pending_commands(self) -> list[CommandRecord]:
        """Pending commands of every active device, in version order (one query)."""
        with self.store.session():
            rows = self.store.db.query(
                "SELECT c.* FROM commands c JOIN devices d ON d.id = c.device_id "
                "WHERE c.status = 'pending' AND d.status = 'active' "
                "ORDER BY c.device_id, c.execution_version"
            )
            return [_command(r) for r in rows]

    def revoked_devices(self) -> list[str]:
        with self.store.session():
            rows = self.store.db.query("SELECT id FROM devices WHERE status = 'revoked'")
            return [r["id"] for r in rows]

    def command(self, command_id: str) -> CommandRecord:
        with self.store.session():
            rows = list(self.store.db.table("commands").rows_where("id = ?", [command_id]))
        if not rows:
            raise NotFound(f"command {command_id!r} does not exist")
        return _command(rows[0])

    def ack_command(
        self, device_id: str, command_id: str, ok: bool, result: dict[str, Any]
    ) -> None:
        """Record a device's ack; a second ack of the same command changes nothing."""
        with self.store.session():
            table = self.store.db.table("commands")
            rows = list(table.rows_where("id = ? AND device_id = ?", [command_id, device_id]))
            if not rows:
                raise NotFound(f"command {command_id!r} is not for device {device_id!r}")
            if rows[0]["status"] != "pending":
                return
            table.update(
                command_id,
                {
                    "status": "ok" if ok else "failed",
                    "acked_at": self.clock(),
                    "result_json": json.dumps(result, sort_keys=True),
                },
            )
        with self._changed:
            self._changed.notify_all()

    def wake(self) -> None:
        """Wake every waiter of :meth:`wait_for_change` (a stream was replaced or ended)."""
        with self._changed:
            self._changed.notify_all()

    def wait_for_change(self, timeout: float) -> None:
        with self._changed:
            self._changed.wait(timeout)

    def notice_external_changes(self) -> bool:
        """Wake waiters if another process (the CLI) committed to the store since last asked.

        SQLite's ``data_version`` changes only for other connections' commits, so
        this costs one pragma and never fires for this process's own writes.
        """
        with self.store.session():
            (version,) = self.store.db.execute("PRAGMA data_version").fetchone()
        if version == self._data_version:
            return False
        first = self._data_version is None
        self._data_version = version
        if not first:
            with self._changed:
                self._changed.notify_all()
        return not first

    # -- uploads (telemetry windows, status reports)

    def ingest(
        self, device_id: str, items: Iterable[tuple[int, str, str]], transport: str
    ) -> UploadResult:
        """Store uploads once per (device id, seq); malformed ones are rejected and logged.

        Raises ResourceExhausted, storing nothing, when the device is over its
        byte or rate quota; the refusal is counted for operators.
        """
        items = list(items)
        refusal = self.quota.take(device_id, sum(len(i[2]) for i in items), len(items))
        if refusal is not None:
            with self._activity_lock:
                self._refused[device_id] = self._refused.get(device_id, 0) + 1
            logger.warning("upload from %s over %s refused: %s", device_id, transport, refusal)
            raise ResourceExhausted(refusal)
        acked: list[int] = []
        rejected: list[int] = []
        errors: list[str] = []
        rows = []
        for seq, kind, body_json in items:
            problem = _check_upload(device_id, seq, kind, body_json)
            if problem:
                logger.warning("upload from %s seq %s rejected: %s", device_id, seq, problem)
                rejected.append(seq)
                errors.append(problem)
                continue
            rows.append(
                {
                    "device_id": device_id,
                    "seq": seq,
                    "kind": kind,
                    "body_json": body_json,
                    "received_at": self.clock(),
                    "transport": transport,
                }
            )
            acked.append(seq)
        if rows:
            with self.store.session():
                self.store.db.table("uploads").insert_all(rows, ignore=True)
        return UploadResult(acked, rejected, errors)

    def uploads(
        self, device_id: str | None = None, kind: str | None = None
    ) -> list[dict[str, Any]]:
        where, args = [], []
        if device_id:
            where.append("device_id = ?")
            args.append(device_id)
        if kind:
            where.append("kind = ?")
            args.append(kind)
        with self.store.session():
            rows = self.store.db.table("uploads").rows_where(
                " AND ".join(where) or None, args, order_by="device_id, seq"
            )
            return [dict(r) for r in rows]


def _command(row: dict[str, Any]) -> CommandRecord:
    return CommandRecord(
        id=row["id"],
        device_id=row["device_id"],
        execution_version=int(row["execution_version"]),
        kind=row["kind"],
        body=json.loads(row["body_json"]),
        status=row["status"],
    )


def _check_upload(device_id: str, seq: int, kind: str, body_json: str) -> str | None:
    if kind not in UPLOAD_KINDS:
        return f"unknown upload kind {kind!r}"
    if seq < 1:
        return f"sequence {seq} is not positive"
    if len(body_json) > MAX_UPLOAD_BYTES:
        return f"body of {len(body_json)} bytes exceeds {MAX_UPLOAD_BYTES}"
    try:
        body = json.loads(body_json)
    except ValueError as exc:
        return f"body is not JSON: {exc}"
    if not isinstance(body, dict):
        return "body is not a JSON object"
    if body.get("device_id") != device_id:
        return f"body names device {body.get('device_id')!r}, not the sender {device_id!r}"
    if body.get("sequence") != seq:
        return f"body sequence {body.get('sequence')!r} != envelope sequence {seq}"
    return None
