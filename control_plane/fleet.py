"""The fleet: enrollment, device credentials, commands, package catalog, uploads.

Transports (gRPC, MQTT) and, later, the REST API all call this one service, so
a rule (a revoked device is refused; an upload is stored exactly once per
(device id, sequence)) holds whatever way a message arrived.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from control_plane.errors import Conflict, InvalidInput, NotFound, Unauthenticated
from control_plane.store.db import Store
from edge_agent.errors import PackageError
from edge_agent.package import open_package

logger = logging.getLogger(__name__)

COMMAND_KINDS = frozenset({"deploy", "rollback", "config", "capture"})
UPLOAD_KINDS = frozenset({"telemetry_window", "status"})
MAX_UPLOAD_BYTES = 4 * 1024 * 1024
_DEVICE_ID = "abcdefghijklmnopqrstuvwxyz0123456789-_"


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def check_device_id(device_id: str) -> str:
    if not 1 <= len(device_id) <= 64 or any(c not in _DEVICE_ID for c in device_id):
        raise InvalidInput(
            f"device id {device_id!r}: use 1-64 lower-case letters, digits, '-' or '_'"
        )
    return device_id


@dataclass(frozen=True)
class Credentials:
    device_id: str
    device_token: str
    mqtt_password: str


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

    def __init__(self, store: Store, public_key: Ed25519PublicKey, package_dir: Path) -> None:
        self.store = store
        self.public_key = public_key
        self.package_dir = package_dir
        self._changed = threading.Condition()
        self._data_version: int | None = None
        self.on_enroll: list[DeviceHook] = []
        self.on_revoke: list[DeviceHook] = []
        self.on_command: list[Callable[[CommandRecord], None]] = []

    # -- audit

    def audit(self, actor: str, action: str, subject: str, **detail: Any) -> None:
        with self.store.lock:
            self.store.db.table("audit").insert(
                {
                    "at": time.time(),
                    "actor": actor,
                    "action": action,
                    "subject": subject,
                    "detail_json": json.dumps(detail, sort_keys=True),
                }
            )

    # -- enrollment and credentials

    def create_enrollment_token(self, actor: str, device_id: str | None = None) -> str:
        token = "enr_" + secrets.token_urlsafe(24)
        row = {"token_hash": _hash(token), "device_id": device_id, "created_at": time.time()}
        with self.store.lock:
            self.store.db.table("enrollment_tokens").insert(row)
        self.audit(actor, "enrollment_token.create", device_id or "*")
        return token

    def enroll(self, token: str, device_id: str, host: dict[str, Any]) -> Credentials:
        check_device_id(device_id)
        with self.store.lock:
            tokens = self.store.db.table("enrollment_tokens")
            rows = list(tokens.rows_where("token_hash = ?", [_hash(token)]))
            if not rows or rows[0]["used_by"]:
                raise Unauthenticated("enrollment token is unknown or already used")
            bound = rows[0]["device_id"]
            if bound and bound != device_id:
                raise Unauthenticated(f"enrollment token is for device {bound!r}")
            devices = self.store.db.table("devices")
            if list(devices.rows_where("id = ?", [device_id])):
                raise Conflict(f"device {device_id!r} is already enrolled")
            secret = secrets.token_urlsafe(32)
            mqtt_password = secrets.token_urlsafe(24)
            devices.insert(
                {
                    "id": device_id,
                    "token_hash": _hash(secret),
                    "status": "active",
                    "host_json": json.dumps(host, sort_keys=True),
                    "enrolled_at": time.time(),
                    "next_version": 1,
                }
            )
            tokens.update(rows[0]["token_hash"], {"used_by": device_id, "used_at": time.time()})
        for hook in self.on_enroll:
            hook(device_id, mqtt_password)
        self.audit(f"device:{device_id}", "device.enroll", device_id)
        return Credentials(device_id, f"{device_id}.{secret}", mqtt_password)

    def authenticate(self, device_token: str) -> str:
        """The device id a credential belongs to; Unauthenticated if unknown or revoked."""
        device_id, _, secret = device_token.partition(".")
        if not device_id or not secret:
            raise Unauthenticated("malformed device credential")
        with self.store.lock:
            rows = list(self.store.db.table("devices").rows_where("id = ?", [device_id]))
        if not rows or not hmac.compare_digest(rows[0]["token_hash"], _hash(secret)):
            raise Unauthenticated("unknown device credential")
        if rows[0]["status"] != "active":
            raise Unauthenticated(f"device {device_id!r} is revoked")
        return device_id

    def is_active(self, device_id: str) -> bool:
        with self.store.lock:
            rows = list(self.store.db.table("devices").rows_where("id = ?", [device_id]))
        return bool(rows) and rows[0]["status"] == "active"

    def revoke(self, device_id: str, actor: str) -> None:
        with self.store.lock:
            devices = self.store.db.table("devices")
            if not list(devices.rows_where("id = ?", [device_id])):
                raise NotFound(f"device {device_id!r} is not enrolled")
            devices.update(device_id, {"status": "revoked", "revoked_at": time.time()})
        for hook in self.on_revoke:
            hook(device_id, "")
        self.audit(actor, "device.revoke", device_id)
        with self._changed:
            self._changed.notify_all()

    def devices(self) -> list[dict[str, Any]]:
        with self.store.lock:
            rows = self.store.db.table("devices").rows_where(order_by="id")
            return [
                {k: r[k] for k in ("id", "status", "enrolled_at", "revoked_at", "last_seen")}
                for r in rows
            ]

    def touch(self, device_id: str) -> None:
        with self.store.lock:
            self.store.db.table("devices").update(device_id, {"last_seen": time.time()})

    # -- packages

    def add_package(self, path: Path, actor: str) -> str:
        """Register a signed package file (verified first); returns its sha256."""
        try:
            package = open_package(path, self.public_key)
        except PackageError as exc:
            raise InvalidInput(f"package {path}: {exc}") from exc
        m = package.manifest
        self.package_dir.mkdir(parents=True, exist_ok=True)
        stored = self.package_dir / f"{package.sha256}.fcpkg"
        if not stored.exists():
            stored.write_bytes(path.read_bytes())
        with self.store.lock:
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
                    "created_at": time.time(),
                },
                pk="sha256",
            )
        self.audit(actor, "package.add", package.sha256, package_id=m.package_id)
        return package.sha256

    def package(self, sha256: str) -> dict[str, Any]:
        with self.store.lock:
            rows = list(self.store.db.table("packages").rows_where("sha256 = ?", [sha256]))
        if not rows:
            raise NotFound(f"package {sha256} is not in the catalog")
        return dict(rows[0])

    def package_path(self, sha256: str) -> Path:
        return Path(self.package(sha256)["path"])

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
        with self.store.lock:
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
                    "created_at": time.time(),
                }
            )
        self.audit(actor, f"command.{kind}", device_id, command_id=record.id, **body)
        for hook in self.on_command:
            hook(record)
        with self._changed:
            self._changed.notify_all()
        return record

    def pending_commands(self, device_id: str) -> list[CommandRecord]:
        with self.store.lock:
            rows = self.store.db.table("commands").rows_where(
                "device_id = ? AND status = 'pending'", [device_id], order_by="execution_version"
            )
            return [_command(r) for r in rows]

    def all_pending_commands(self) -> list[CommandRecord]:
        """Pending commands of every active device, in version order (one query)."""
        with self.store.lock:
            rows = self.store.db.query(
                "SELECT c.* FROM commands c JOIN devices d ON d.id = c.device_id "
                "WHERE c.status = 'pending' AND d.status = 'active' "
                "ORDER BY c.device_id, c.execution_version"
            )
            return [_command(r) for r in rows]

    def revoked_devices(self) -> list[str]:
        with self.store.lock:
            rows = self.store.db.query("SELECT id FROM devices WHERE status = 'revoked'")
            return [r["id"] for r in rows]

    def command(self, command_id: str) -> CommandRecord:
        with self.store.lock:
            rows = list(self.store.db.table("commands").rows_where("id = ?", [command_id]))
        if not rows:
            raise NotFound(f"command {command_id!r} does not exist")
        return _command(rows[0])

    def ack_command(
        self, device_id: str, command_id: str, ok: bool, result: dict[str, Any]
    ) -> None:
        """Record a device's ack; a second ack of the same command changes nothing."""
        with self.store.lock:
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
                    "acked_at": time.time(),
                    "result_json": json.dumps(result, sort_keys=True),
                },
            )
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
        with self.store.lock:
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
        """Store uploads once per (device id, seq); malformed ones are rejected and logged."""
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
                    "received_at": time.time(),
                    "transport": transport,
                }
            )
            acked.append(seq)
        if rows:
            with self.store.lock:
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
        with self.store.lock:
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
