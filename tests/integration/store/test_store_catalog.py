"""Models, immutable versions, aliases, API tokens and compile jobs on both backends."""

from __future__ import annotations

import pytest

from control_plane.errors import Conflict, InvalidInput, NotFound
from control_plane.store.records import ModelCard
from control_plane.store.sql.store import SqlRepositories

pytestmark = pytest.mark.integration

CARD = ModelCard(
    intended_use="digit recognition on shop-floor cameras",
    training_data="sklearn digits, 80/20 split",
    owner="ml-team",
    metrics={"accuracy": 0.97},
)


def _model(repos: SqlRepositories, *versions: str) -> None:
    repos.models.add("digits", "handwritten digits", "ml-team", at=1.0)
    for i, version in enumerate(versions):
        repos.versions.add("digits", version, CARD, f"src-{version}", at=2.0 + i)


def test_models_are_unique_and_listed_by_owner(repos: SqlRepositories) -> None:
    model = repos.models.add("digits", "handwritten digits", "ml-team", at=1.0)
    repos.models.add("anomaly", "vibration anomalies", "ops", at=2.0)
    assert repos.models.get("digits") == model
    with pytest.raises(Conflict, match="digits"):
        repos.models.add("digits", "again", "x", at=3.0)
    assert [m.name for m in repos.models.list().items] == ["anomaly", "digits"]
    assert [m.name for m in repos.models.list(owner="ops").items] == ["anomaly"]
    with pytest.raises(InvalidInput, match="model name"):
        repos.models.add("no spaces", "", "x", at=1.0)


def test_versions_are_immutable_and_keep_their_card(repos: SqlRepositories) -> None:
    _model(repos, "1.0.0")
    version = repos.versions.get("digits", "1.0.0")
    assert (version.card, version.stage, version.source_sha256) == (CARD, "registered", "src-1.0.0")
    with pytest.raises(Conflict, match="immutable"):
        repos.versions.add("digits", "1.0.0", CARD, None, at=9.0)
    with pytest.raises(NotFound, match="'2.0'"):
        repos.versions.get("digits", "2.0")
    with pytest.raises(NotFound, match="model 'nope'"):
        repos.versions.add("nope", "1", CARD, None, at=1.0)


def test_stage_moves_by_compare_and_set(repos: SqlRepositories) -> None:
    _model(repos, "1", "2")
    moved = repos.versions.set_stage("digits", "1", "registered", "compiled", at=5.0)
    assert (moved.stage, moved.stage_changed_at) == ("compiled", 5.0)
    with pytest.raises(Conflict, match="moved meanwhile"):
        repos.versions.set_stage("digits", "1", "registered", "compiled", at=6.0)
    assert [v.version for v in repos.versions.list("digits", stage="compiled").items] == ["1"]
    assert [v.version for v in repos.versions.list("digits").items] == ["1", "2"]
    with pytest.raises(InvalidInput, match="stage 'shipped'"):
        repos.versions.set_stage("digits", "2", "registered", "shipped", at=6.0)


def test_aliases_move_and_remember_the_previous_version(repos: SqlRepositories) -> None:
    _model(repos, "1", "2")
    first = repos.aliases.set("digits", "production", "1", at=3.0)
    assert (first.version, first.previous_version) == ("1", None)
    moved = repos.aliases.set("digits", "production", "2", at=4.0)
    assert (moved.version, moved.previous_version, moved.updated_at) == ("2", "1", 4.0)
    repos.aliases.set("digits", "staging", "2", at=4.0)
    assert [a.alias for a in repos.aliases.list("digits")] == ["production", "staging"]
    with pytest.raises(NotFound, match="version '3'"):
        repos.aliases.set("digits", "production", "3", at=5.0)
    repos.aliases.delete("digits", "staging")
    with pytest.raises(NotFound, match="staging"):
        repos.aliases.get("digits", "staging")


def test_api_tokens_have_roles_and_can_be_revoked(repos: SqlRepositories) -> None:
    admin = repos.api_tokens.add("bootstrap", "hash-a", "admin", "fleetcast admin init", at=1.0)
    viewer = repos.api_tokens.add("dashboard", "hash-v", "viewer", admin.id, at=2.0)
    assert repos.api_tokens.by_hash("hash-v") == viewer
    assert repos.api_tokens.by_hash("hash-unknown") is None
    with pytest.raises(InvalidInput, match="role 'root'"):
        repos.api_tokens.add("x", "hash-x", "root", admin.id, at=3.0)
    with pytest.raises(Conflict, match="hash"):
        repos.api_tokens.add("again", "hash-v", "viewer", admin.id, at=3.0)
    revoked = repos.api_tokens.revoke(viewer.id, at=4.0)
    assert revoked.revoked_at == 4.0
    assert [t.name for t in repos.api_tokens.list().items] == ["bootstrap"]
    assert [t.name for t in repos.api_tokens.list(include_revoked=True).items] == [
        "bootstrap",
        "dashboard",
    ]
    assert [t.name for t in repos.api_tokens.list(role="admin").items] == ["bootstrap"]
    repos.api_tokens.touch(admin.id, at=5.0)
    assert repos.api_tokens.get(admin.id).last_used_at == 5.0


def test_compile_job_runs_from_queued_to_succeeded(repos: SqlRepositories) -> None:
    _model(repos, "1")
    job = repos.compile_jobs.add("digits", "1", ["x86-64-generic", "rpi4"], "op", at=1.0)
    assert (job.state, job.progress, job.log, job.profiles) == (
        "queued",
        0.0,
        "",
        ["x86-64-generic", "rpi4"],
    )
    with pytest.raises(Conflict, match="not running"):
        repos.compile_jobs.progress(job.id, 0.1, "too early\n")
    claimed = repos.compile_jobs.claim("worker-1", at=2.0)
    assert claimed is not None and (claimed.id, claimed.state, claimed.worker) == (
        job.id,
        "running",
        "worker-1",
    )
    assert repos.compile_jobs.claim("worker-2", at=2.0) is None
    repos.compile_jobs.progress(job.id, 0.5, "x86 done\n")
    repos.compile_jobs.progress(job.id, 0.9, "rpi4 done\n")
    done = repos.compile_jobs.finish(job.id, "succeeded", at=3.0, report={"packages": 2})
    assert (done.state, done.progress, done.log, done.report) == (
        "succeeded",
        1.0,
        "x86 done\nrpi4 done\n",
        {"packages": 2},
    )
    with pytest.raises(Conflict, match="already succeeded"):
        repos.compile_jobs.finish(job.id, "failed", at=4.0, error="late")
    assert [j.id for j in repos.compile_jobs.list(state="succeeded").items] == [job.id]


def test_compile_jobs_are_claimed_oldest_first_and_checked(repos: SqlRepositories) -> None:
    _model(repos, "1")
    older = repos.compile_jobs.add("digits", "1", ["a"], "op", at=1.0)
    newer = repos.compile_jobs.add("digits", "1", ["b"], "op", at=2.0)
    first = repos.compile_jobs.claim("w", at=3.0)
    second = repos.compile_jobs.claim("w", at=3.0)
    assert first is not None and second is not None
    assert (first.id, second.id) == (older.id, newer.id)
    failed = repos.compile_jobs.finish(newer.id, "failed", at=4.0, error="op Foo unsupported")
    assert (failed.state, failed.error, failed.progress) == ("failed", "op Foo unsupported", 0.0)
    with pytest.raises(NotFound, match="version '9'"):
        repos.compile_jobs.add("digits", "9", ["a"], "op", at=1.0)
    with pytest.raises(InvalidInput, match="profile"):
        repos.compile_jobs.add("digits", "1", [], "op", at=1.0)
    with pytest.raises(InvalidInput, match="final job state"):
        repos.compile_jobs.finish(older.id, "running", at=5.0)
