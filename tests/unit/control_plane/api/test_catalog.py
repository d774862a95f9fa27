"""The catalog through the API: versions, lifecycle, aliases, compile jobs, and their audit."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from api_support import PROFILE, Api, fake_runner, make_api, npz_bytes, seed

from control_plane.errors import CompileError
from control_plane.services.compile_jobs import BuiltPackage, CompileTask, CompileWorker, ProgressFn
from control_plane.services.tokens import Principal

CARD = {"intended_use": "digits", "training_data": "sklearn digits v1", "owner": "ml"}


@pytest.fixture
def api(tmp_path: Path) -> Api:
    api = make_api(tmp_path)
    seed(api)
    return api


def stage(api: Api, version: str, target: str, who: str = "operator") -> dict[str, object]:
    answer = api.call(
        "POST", f"/api/v1/models/digits/versions/{version}/stage", who, json={"stage": target}
    )
    return {"status": answer.status_code, **answer.json}


def test_a_version_walks_the_whole_lifecycle(api: Api) -> None:
    for target in ("compiled", "staged", "production", "deprecated", "retired"):
        moved = stage(api, "1", target)
        assert (moved["status"], moved["stage"]) == (200, target)
    assert (
        api.call("GET", "/api/v1/models/digits/versions?stage=retired").json["items"][0]["version"]
        == "1"
    )


def test_an_illegal_move_is_a_409_naming_the_transition(api: Api) -> None:
    answer = stage(api, "1", "production")
    assert answer["status"] == 409
    assert answer["transition"] == {"from": "registered", "to": "production"}
    assert "registered → production" in str(answer["detail"])


def test_compiled_needs_a_package(api: Api) -> None:
    answer = stage(api, "2", "compiled")
    assert answer["status"] == 409
    assert "compile it first" in str(answer["detail"])


def test_versions_are_immutable(api: Api) -> None:
    answer = api.call("POST", "/api/v1/models/digits/versions", json={"version": "1", "card": CARD})
    assert answer.status_code == 409


def test_a_version_needs_its_uploads_to_exist(api: Api) -> None:
    missing = "0" * 64
    answer = api.call(
        "POST",
        "/api/v1/models/digits/versions",
        json={"version": "9", "card": CARD, "source_sha256": missing, "source_format": "onnx"},
    )
    assert answer.status_code == 404
    assert missing in answer.json["detail"]


def test_aliases_move_and_remember_where_they_were(api: Api) -> None:
    moved = api.call("PUT", "/api/v1/models/digits/aliases/staging", json={"version": "2"}).json
    assert (moved["version"], moved["previous_version"]) == ("2", "1")
    stage(api, "1", "retired")
    refused = api.call("PUT", "/api/v1/models/digits/aliases/staging", json={"version": "1"})
    assert refused.status_code == 409
    assert api.call("DELETE", "/api/v1/models/digits/aliases/staging").status_code == 204
    assert api.call("GET", "/api/v1/models/digits/aliases/staging").status_code == 404


def test_a_compile_job_registers_one_package_per_profile(api: Api, tmp_path: Path) -> None:
    profiles = [PROFILE, "raspberry-pi-4"]
    job = api.call(
        "POST",
        "/api/v1/compile-jobs",
        "operator",
        json={"model": "digits", "version": "2", "profiles": profiles},
    ).json
    assert job["state"] == "queued"
    context = api.context
    first = context.jobs.run_one("w1", fake_runner(tmp_path / "out"))  # the seeded job
    second = context.jobs.run_one("w1", fake_runner(tmp_path / "out"))
    assert first is not None and second is not None and second.id == job["id"]
    assert context.jobs.run_one("w1", fake_runner(tmp_path / "out")) is None
    done = api.call("GET", f"/api/v1/compile-jobs/{job['id']}").json
    assert (done["state"], done["progress"], done["worker"]) == ("succeeded", 1.0, "w1")
    assert "building for raspberry-pi-4" in done["log"]
    assert [p["profile"] for p in done["report"]["packages"]] == profiles
    packages = api.call("GET", "/api/v1/packages?model=digits&version=2").json["items"]
    assert sorted(p["profile_id"] for p in packages) == sorted(profiles)
    assert api.call("GET", "/api/v1/models/digits/versions/2").json["stage"] == "compiled"


def test_a_failed_compile_keeps_the_error_and_registers_nothing(api: Api) -> None:
    def broken(task: CompileTask, progress: ProgressFn) -> list[BuiltPackage]:
        progress(0.1, "loading model")
        raise CompileError("op Foo has no int8 kernel")

    done = api.context.jobs.run_one("w1", broken)
    assert done is not None and done.state == "failed"
    assert done.error == "op Foo has no int8 kernel"
    shown = api.call("GET", f"/api/v1/compile-jobs/{done.id}").json
    assert shown["error"] == "op Foo has no int8 kernel" and "loading model" in shown["log"]
    assert api.call("GET", "/api/v1/packages?version=1").json["items"][0]["package_id"] == (
        "digits-1-x86"
    )  # only the seeded one
    assert api.call("GET", "/api/v1/compile-jobs?state=failed").json["items"][0]["id"] == done.id


def test_a_job_needs_data_and_known_profiles(api: Api) -> None:
    api.call("POST", "/api/v1/models/digits/versions", json={"version": "bare", "card": CARD})
    bare = api.call("POST", "/api/v1/compile-jobs", json={"model": "digits", "version": "bare"})
    assert bare.status_code == 400
    assert "calibration" in bare.json["detail"] and "source" in bare.json["detail"]
    unknown = api.call(
        "POST",
        "/api/v1/compile-jobs",
        json={"model": "digits", "version": "2", "profiles": ["toaster"]},
    )
    assert unknown.status_code == 400 and "toaster" in unknown.json["detail"]


def test_the_worker_thread_runs_queued_jobs_and_two_workers_never_share_one(
    api: Api, tmp_path: Path
) -> None:
    ran: list[str] = []
    lock = threading.Lock()

    def counting(task: CompileTask, progress: ProgressFn) -> list[BuiltPackage]:
        with lock:
            ran.append(task.job.id)
        return fake_runner(tmp_path / task.job.id)(task, progress)

    for version in ("1", "2", "1", "2"):
        api.call("POST", "/api/v1/compile-jobs", json={"model": "digits", "version": version})
    workers = [CompileWorker(api.context.jobs, counting, f"w{i}", poll=0.05) for i in range(2)]
    for worker in workers:
        worker.start()
    try:
        deadline = time.monotonic() + 60
        while len(api.call("GET", "/api/v1/compile-jobs?state=succeeded").json["items"]) < 5:
            assert time.monotonic() < deadline, "jobs did not finish"
            time.sleep(0.05)
    finally:
        for worker in workers:
            worker.stop()
    assert len(ran) == len(set(ran)) == 5


def test_every_change_is_audited_with_before_and_after(api: Api) -> None:
    calibration = api.upload(npz_bytes(input=np.zeros((2, 64), np.float32)))
    api.call("POST", "/api/v1/models", "operator", json={"name": "kws", "owner": "audio"})
    stage(api, "1", "compiled")
    api.call("PUT", "/api/v1/models/digits/aliases/staging", "operator", json={"version": "2"})
    api.call("DELETE", "/api/v1/models/digits/aliases/staging", "operator")
    entries = api.call("GET", "/api/v1/audit?limit=1000").json["items"]
    actions = [(e["actor"], e["action"], e["subject"]) for e in reversed(entries)]
    assert actions[-5:] == [
        ("admin-token", "upload.create", f"upload:{calibration}"),
        ("operator-token", "model.create", "model:kws"),
        ("operator-token", "version.stage", "model:digits/version:1"),
        ("operator-token", "alias.set", "model:digits/alias:staging"),
        ("operator-token", "alias.delete", "model:digits/alias:staging"),
    ]
    by_action = {e["action"]: e for e in reversed(entries)}  # the newest of each action
    assert by_action["version.stage"]["before"] == {"stage": "registered"}
    assert by_action["version.stage"]["after"] == {"stage": "compiled"}
    assert by_action["alias.set"]["before"]["version"] == "1"
    assert by_action["alias.set"]["after"]["version"] == "2"
    assert "token_hash" not in str(by_action["token.create"]["after"])
    # the seed's mutations are there too: tokens, uploads, model, versions, alias, job
    seeded = {e["action"] for e in entries}
    assert {"token.create", "version.register", "compile_job.create"} <= seeded


def test_the_audit_log_filters(api: Api) -> None:
    api.call("POST", "/api/v1/models", "operator", json={"name": "kws", "owner": "audio"})
    everything = api.call("GET", "/api/v1/audit?limit=1000").json["items"]
    mine = api.call("GET", "/api/v1/audit?actor=operator-token").json["items"]
    assert [e["action"] for e in mine] == ["model.create"]
    stages = api.call("GET", "/api/v1/audit?action=version.register").json["items"]
    assert {e["subject"] for e in stages} == {"model:digits/version:1", "model:digits/version:2"}
    one = api.call("GET", "/api/v1/audit?subject=model:kws").json["items"]
    assert len(one) == 1
    at = one[0]["at"]
    assert api.call("GET", f"/api/v1/audit?since={at}&limit=1000").json["items"][0]["at"] == at
    older = api.call("GET", f"/api/v1/audit?until={at}&limit=1000").json["items"]
    assert len(older) < len(everything) or all(e["at"] <= at for e in older)


def test_a_job_succeeds_when_another_replica_marked_the_version_compiled_first(
    api: Api, tmp_path: Path
) -> None:
    catalog = api.context.catalog
    real = catalog.move_stage

    def other_replica_wins(*args: Any, **kwargs: Any) -> Any:
        catalog.move_stage = real  # type: ignore[method-assign]
        real("digits", "1", "compiled", Principal("replica-2", "operator"))
        return real(*args, **kwargs)

    catalog.move_stage = other_replica_wins  # type: ignore[method-assign]
    done = api.context.jobs.run_one("w1", fake_runner(tmp_path / "out"))
    assert done is not None and (done.state, done.error) == ("succeeded", None)
    assert api.call("GET", "/api/v1/models/digits/versions/1").json["stage"] == "compiled"


def test_a_queued_job_cancelled_never_runs(api: Api, tmp_path: Path) -> None:
    job_id = api.seeded["job"]
    cancelled = api.call("POST", f"/api/v1/compile-jobs/{job_id}/cancel", "operator").json
    assert (cancelled["state"], cancelled["error"]) == ("cancelled", "cancelled by operator-token")
    assert api.context.jobs.run_one("w1", fake_runner(tmp_path / "out")) is None
    again = api.call("POST", f"/api/v1/compile-jobs/{job_id}/cancel", "operator")
    assert again.status_code == 409 and "already cancelled" in again.json["detail"]
    assert api.call("GET", "/api/v1/audit?action=compile_job.cancel").json["items"][0][
        "before"
    ] == {"state": "queued"}


def test_a_running_job_cancelled_stops_at_its_next_step_and_registers_nothing(
    api: Api, tmp_path: Path
) -> None:
    def cancelled_midway(task: CompileTask, progress: ProgressFn) -> list[BuiltPackage]:
        progress(0.1, "loading model")
        api.call("POST", f"/api/v1/compile-jobs/{task.job.id}/cancel", "operator")
        progress(0.2, "building onnx/fp32")  # the store refuses: the job is not running
        raise AssertionError("the pipeline went on after its job was cancelled")

    done = api.context.jobs.run_one("w1", cancelled_midway)
    assert done is not None and done.state == "cancelled"
    assert "loading model" in done.log and "building" not in done.log
    packages = api.call("GET", "/api/v1/packages?version=1").json["items"]
    assert [p["package_id"] for p in packages] == ["digits-1-x86"]  # only the seeded one
