"""The one-off import of an old fleetcast.db (the schema store/db.py wrote) into the new store."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from control_plane.app import Fleetcast
from control_plane.enrollment import token_hash
from control_plane.errors import Conflict
from control_plane.legacy_store import import_old_store

OLD_SCHEMA = """
CREATE TABLE devices (id TEXT PRIMARY KEY, token_hash TEXT, status TEXT, host_json TEXT,
  enrolled_at FLOAT, revoked_at FLOAT, last_seen FLOAT, next_version INTEGER,
  uploads_refused INTEGER);
CREATE TABLE enrollment_tokens (token_hash TEXT PRIMARY KEY, device_id TEXT, created_at FLOAT,
  expires_at FLOAT, used_by TEXT, used_at FLOAT);
CREATE TABLE packages (sha256 TEXT PRIMARY KEY, package_id TEXT, model_name TEXT,
  model_version TEXT, profile_id TEXT, release INTEGER, size_bytes INTEGER, path TEXT,
  created_at FLOAT);
CREATE TABLE commands (id TEXT PRIMARY KEY, device_id TEXT, execution_version INTEGER,
  kind TEXT, body_json TEXT, status TEXT, created_at FLOAT, acked_at FLOAT, result_json TEXT);
CREATE TABLE uploads (device_id TEXT, seq INTEGER, kind TEXT, body_json TEXT,
  received_at FLOAT, transport TEXT, PRIMARY KEY (device_id, seq));
CREATE TABLE audit (id INTEGER PRIMARY KEY, at FLOAT, actor TEXT, action TEXT, subject TEXT,
  detail_json TEXT);
"""


def _old_store(path: Path, package: Path) -> str:
    """An old store with two devices, tokens, a package, commands, an upload and audit."""
    sha = hashlib.sha256(package.read_bytes()).hexdigest()
    conn = sqlite3.connect(path)
    conn.executescript(OLD_SCHEMA)
    conn.executemany(
        "INSERT INTO devices VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            ("dev-a", token_hash("secret-a"), "active", '{"os": "linux"}', 10.0, None, 50.0, 3, 2),
            ("dev-r", token_hash("secret-r"), "revoked", "{}", 11.0, 20.0, None, 1, 0),
        ],
    )
    conn.executemany(
        "INSERT INTO enrollment_tokens VALUES (?, ?, ?, ?, ?, ?)",
        [
            (token_hash("enr_used"), "dev-a", 5.0, 9e12, "dev-a", 10.0),
            (token_hash("enr_open"), None, 1e12, 9e12, None, None),
            (token_hash("enr_expired"), None, 5.0, 6.0, None, None),
        ],
    )
    conn.executemany(
        "INSERT INTO packages VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (sha, "synthetic-1-test-r1", "synthetic", "1", "test", 1, 99, str(package), 12.0),
            ("f" * 64, "gone-r1", "gone", "1", "test", 1, 5, "/nonexistent.fcpkg", 12.0),
        ],
    )
    conn.executemany(
        "INSERT INTO commands VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            ("c1", "dev-a", 1, "deploy", json.dumps({"sha256": sha}), "ok", 13.0, 14.0, "{}"),
            ("c2", "dev-a", 2, "config", '{"window_seconds": 5}', "pending", 15.0, None, None),
        ],
    )
    body = json.dumps({"device_id": "dev-a", "sequence": 1})
    conn.execute("INSERT INTO uploads VALUES ('dev-a', 1, 'status', ?, 16.0, 'grpc')", [body])
    conn.execute(
        "INSERT INTO audit VALUES (1, 17.0, 'cli', 'device.revoke', 'dev-r', '{}')",
    )
    conn.commit()
    conn.close()
    return sha


def test_an_old_store_is_imported_and_its_devices_keep_their_credentials(
    services: Fleetcast, package_file: Path, tmp_path: Path
) -> None:
    old = tmp_path / "fleetcast.db"
    sha = _old_store(old, package_file)
    report = import_old_store(old, services.repos, now=1e12 + 100)
    assert report.counts == {
        "audit": 1,
        "commands": 2,
        "devices": 2,
        "enrollment_tokens": 1,
        "packages": 1,
        "uploads": 1,
    }
    assert report.skipped and "f" * 64 in report.skipped[0]  # its file is gone: named
    assert services.devices.authenticate("dev-a.secret-a") == "dev-a"
    assert services.devices.revoked_ids() == ["dev-r"]
    a = services.devices.get("dev-a")
    assert (a.last_seen, a.uploads_refused, a.next_version) == (50.0, 2, 3)
    assert [(c.execution_version, c.status) for c in services.commands.list().items] == [
        (1, "ok"),
        (2, "pending"),
    ]
    assert services.packages.path_for_device("dev-a", sha) == package_file
    assert [u.seq for u in services.ingest.all("dev-a")] == [1]
    assert [e.action for e in services.repos.audit.list().items] == [
        "store.import",
        "device.revoke",
    ]
    # the open token still enrolls; importing again is refused
    services.enrollment.enroll("enr_open", "dev-n", {})
    with pytest.raises(Conflict, match="new store only"):
        import_old_store(old, services.repos, now=1e12 + 100)


def test_the_cli_imports_into_a_new_store(tmp_path: Path, package_file: Path) -> None:
    from control_plane.cli import cli
    from control_plane.settings import Settings

    old = tmp_path / "fleetcast.db"
    _old_store(old, package_file)
    settings = Settings(data_dir=tmp_path / "data")
    result = CliRunner().invoke(cli, ["store", "import-old", str(old)], obj=settings)
    assert result.exit_code == 0, result.output
    assert "imported 1 audit, 2 commands, 2 devices" in result.output
    assert (tmp_path / "data" / "store.db").exists()
    again = CliRunner().invoke(cli, ["store", "import-old", str(old)], obj=settings)
    assert again.exit_code == 1 and "new store only" in again.output
