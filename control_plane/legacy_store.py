"""A one-off import of an old ``fleetcast.db`` (the sqlite-utils store before #9) into the store.

The old file has tables but no migration record, so the new store refuses to
open it; ``fleetcast store import-old PATH`` reads it (read-only) and writes
what it held through the repositories: devices with their credentials (hashed,
as they were: enrolled agents keep working), labels-free; unused unexpired
enrollment tokens; packages whose file is still there; commands in execution
order with their acks; uploads; the audit log. The target must be empty of
devices, so an import cannot be applied twice.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from control_plane.errors import Conflict, InvalidInput
from control_plane.store.records import NewDevice, NewUpload, Package
from control_plane.store.repos import Repositories
from edge_agent.errors import EdgeError
from edge_agent.package import read_package

logger = logging.getLogger(__name__)


@dataclass
class ImportReport:
    counts: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def add(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1


def _rows(conn: sqlite3.Connection, table: str, order: str) -> list[dict[str, Any]]:
    exists = conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", [table]).fetchone()
    if not exists:
        return []
    cursor = conn.execute(f"SELECT * FROM {table} ORDER BY {order}")  # noqa: S608 - fixed names
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]


def import_old_store(path: Path, repos: Repositories, now: float) -> ImportReport:
    """Copy an old store's rows into ``repos``; what was left out is named in the report."""
    if not path.exists():
        raise InvalidInput(f"{path}: no such file")
    if repos.devices.list(limit=1).items:
        raise Conflict("the target store has devices already: import into a new store only")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        devices = _rows(conn, "devices", "enrolled_at, id")
    except sqlite3.DatabaseError as exc:
        raise InvalidInput(f"{path}: not a fleetcast store ({exc})") from exc
    report = ImportReport()
    try:
        for d in devices:
            repos.devices.add(
                NewDevice(d["id"], d["token_hash"], host=json.loads(d["host_json"] or "{}")),
                at=d["enrolled_at"] or now,
            )
            if d["status"] == "revoked":
                repos.devices.revoke(d["id"], d["revoked_at"] or now)
            refused = {d["id"]: int(d.get("uploads_refused") or 0)}
            seen = {d["id"]: d["last_seen"]} if d["last_seen"] else {}
            repos.devices.record_activity(seen, refused)
            report.add("devices")
        for t in _rows(conn, "enrollment_tokens", "created_at"):
            expires = t.get("expires_at") or (t["created_at"] or 0) + 24 * 3600
            if t["used_by"] or expires <= now:
                continue
            repos.enrollment_tokens.add(t["token_hash"], t["device_id"], t["created_at"], expires)
            report.add("enrollment_tokens")
        for p in _rows(conn, "packages", "created_at"):
            try:
                manifest, _, _ = read_package(Path(p["path"]).read_bytes())
            except (OSError, EdgeError) as exc:
                report.skipped.append(f"package {p['sha256']}: {exc}")
                continue
            fields = {k: p[k] for k in ("sha256", "package_id", "model_name", "model_version",
                                        "profile_id", "release", "size_bytes", "path")}  # fmt: skip
            manifest_json = manifest.model_dump(mode="json")
            repos.packages.put(
                Package(**fields, manifest=manifest_json, created_at=p["created_at"])
            )
            report.add("packages")
        for c in _rows(conn, "commands", "device_id, execution_version"):
            new = repos.commands.add(
                c["device_id"], c["kind"], json.loads(c["body_json"]), c["created_at"]
            )
            if new.execution_version != c["execution_version"]:  # a gap in the old numbering
                report.skipped.append(
                    f"command {c['id']}: execution version {c['execution_version']} "
                    f"is {new.execution_version} now"
                )
            if c["status"] in ("ok", "failed"):
                result = json.loads(c["result_json"] or "{}")
                repos.commands.ack(
                    new.id, c["device_id"], c["status"] == "ok", result, c["acked_at"] or now
                )
            report.add("commands")
        for u in _rows(conn, "uploads", "device_id, seq"):
            item = NewUpload(int(u["seq"]), u["kind"], u["body_json"])
            repos.uploads.add(u["device_id"], [item], u["transport"], u["received_at"])
            report.add("uploads")
        for a in _rows(conn, "audit", "id"):
            detail = json.loads(a["detail_json"] or "{}")
            repos.audit.add(a["actor"], a["action"], a["subject"], a["at"], detail=detail)
            report.add("audit")
    finally:
        conn.close()
    repos.audit.add("import", "store.import", str(path), now, detail=dict(report.counts))
    for line in report.skipped:
        logger.warning("import of %s: skipped %s", path, line)
    return report
