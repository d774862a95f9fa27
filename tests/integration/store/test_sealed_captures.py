"""Captured samples are sealed at rest (AES-256-GCM): not in the store's bytes, still readable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_store_monitoring import _ingest, _windows

from control_plane.app import open_store, sample_keyring
from control_plane.crypto import SampleKeyring, rotate_sample_key
from control_plane.errors import InvalidInput
from control_plane.services.audit import AuditService
from control_plane.services.monitoring import MonitoringService
from control_plane.services.tokens import Principal
from control_plane.settings import Settings
from control_plane.store.factory import open_repositories
from control_plane.store.sql.store import SqlRepositories


def _feature_texts(window: dict[str, object]) -> list[str]:
    """The captured feature values of a window, as JSON writes them (what a leak would show)."""
    captures = window["captures"]
    assert isinstance(captures, list)
    values = [v for c in captures for row in c["inputs"]["x"] for v in row]
    return [json.dumps(v) for v in values if len(json.dumps(v)) >= 8]


def test_the_sqlite_file_holds_no_captured_feature_in_clear_and_reads_decrypt(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    repos = open_store(settings)
    ingest = _ingest(repos)  # type: ignore[arg-type]
    _, windows = _windows(repos)  # type: ignore[arg-type]
    sent = [(w["sequence"], "telemetry_window", json.dumps(w)) for w in windows]
    assert ingest.ingest("cam-1", sent, "grpc").acked == [1, 2]
    secrets = _feature_texts(windows[0])
    assert len(secrets) >= 8
    raw = b"".join(
        p.read_bytes() for p in (tmp_path / "data").glob("store.db*") if p.is_file()
    )  # the database, its WAL and shared memory, as a thief would copy them
    assert secrets[0].encode() in json.dumps(windows[0]).encode()  # the value is findable...
    leaked = [s for s in secrets if s.encode() in raw]
    assert leaked == []  # ...but not in the store
    key = tmp_path / "data" / "keys" / "samples.key"
    assert key.stat().st_mode & 0o777 == 0o600
    ids = [c["prediction_id"] for c in windows[0]["captures"]]
    stored = {c.prediction_id: c for c in repos.monitoring.captures(ids)}
    for sent_capture in windows[0]["captures"]:
        back = stored[sent_capture["prediction_id"]]
        assert back.inputs == sent_capture["inputs"] and back.outputs == sent_capture["outputs"]
    raw_upload = json.loads(ingest.all(kind="telemetry_window")[0].body_json)
    assert all(set(c) >= {"prediction_id", "sealed"} for c in raw_upload["captures"])
    assert not any("inputs" in c for c in raw_upload["captures"])
    # the readers (feedback join, accuracy) go through the same decrypting repository
    monitoring = MonitoringService(repos, AuditService(repos.audit))
    joined = monitoring.add_feedback([(pid, 0.0) for pid in ids], Principal("ops", "operator"))
    assert joined.matched == len(ids)
    assert monitoring.accuracy("digits", "1", bucket_s=1e9)["labelled"] == len(ids)
    repos.close()

    rotate_sample_key(settings.key_dir)  # rows keep their key id and still open afterwards
    reopened = open_store(settings)
    assert len(sample_keyring(settings).key_ids) == 2
    assert len(reopened.monitoring.captures(ids)) == len(ids)
    reopened.close()


def test_a_store_opened_without_the_key_says_which_key_is_missing(repos: SqlRepositories) -> None:
    ingest = _ingest(repos)
    _, windows = _windows(repos)
    ingest.ingest("cam-1", [(1, "telemetry_window", json.dumps(windows[0]))], "grpc")
    ids = [c["prediction_id"] for c in windows[0]["captures"]]
    assert repos.monitoring.captures(ids)[0].inputs  # the store's own keyring opens them
    db = repos.db
    url = str(getattr(db, "conninfo", None) or getattr(db, "path", ""))
    stranger = open_repositories(url, sample_keys=SampleKeyring.ephemeral())
    try:
        with pytest.raises(InvalidInput, match=repos.sample_keys.current_id):
            stranger.monitoring.captures(ids)
    finally:
        stranger.close()
