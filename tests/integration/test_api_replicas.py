"""Two API replicas on one store (SQLite file, real PostgreSQL): one catalog, each job run once."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pg_support import INSTALL_HINT, PostgresServer, find_pg_bin

from control_plane.api import ApiOptions, create_api
from control_plane.services.compile_jobs import BuiltPackage, CompileTask, CompileWorker, ProgressFn
from control_plane.services.tokens import bootstrap_admin
from control_plane.settings import Settings
from control_plane.store.factory import open_repositories

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "control_plane" / "api"))
from api_support import PROFILE, fake_runner, npz_bytes  # noqa: E402

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    bin_dir = find_pg_bin()
    if bin_dir is None:  # never a skip: `make test` installs it
        pytest.fail(INSTALL_HINT)
    server = PostgresServer(bin_dir).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        server: PostgresServer = request.getfixturevalue("postgres")
        return server.create_database()
    return f"sqlite:///{tmp_path / 'store.db'}"


def test_two_replicas_share_the_catalog_and_never_run_a_job_twice(
    store_url: str, tmp_path: Path
) -> None:
    import numpy as np

    settings = Settings(data_dir=tmp_path / "data", profiles_dir=ROOT / "hardware-profiles")
    stores = [open_repositories(store_url) for _ in range(2)]
    _, admin = bootstrap_admin(stores[0])
    auth = {"Authorization": f"Bearer {admin}"}
    apps = [
        create_api(repos, settings, ApiOptions(runner=fake_runner(tmp_path / "out")))
        for repos in stores
    ]
    a, b = (app.test_client() for app in apps)
    ran: list[str] = []
    lock = threading.Lock()
    workers: list[CompileWorker] = []
    try:
        assert b.get("/api/v1/whoami", headers=auth).json["name"] == "admin"  # token made via a
        assert a.post("/api/v1/models", json={"name": "digits", "owner": "ml"}, headers=auth)
        upload = {"headers": auth, "content_type": "application/octet-stream"}
        x = np.zeros((4, 64), np.float32)
        source = b.post("/api/v1/uploads", data=b"onnx", **upload).json["sha256"]
        data = b.post("/api/v1/uploads", data=npz_bytes(input=x), **upload).json["sha256"]
        registered = b.post(
            "/api/v1/models/digits/versions",
            headers=auth,
            json={
                "version": "1",
                "card": {"intended_use": "u", "training_data": "t", "owner": "o"},
                "source_sha256": source,
                "source_format": "onnx",
                "data": {"calibration": data, "validation": data},
            },
        )
        assert registered.status_code == 201, registered.json
        for _ in range(6):
            job = a.post(
                "/api/v1/compile-jobs",
                headers=auth,
                json={"model": "digits", "version": "1", "profiles": [PROFILE]},
            )
            assert job.status_code == 202, job.json

        def counting(task: CompileTask, progress: ProgressFn) -> list[BuiltPackage]:
            with lock:
                ran.append(task.job.id)
            return fake_runner(tmp_path / task.job.id)(task, progress)

        for i, app in enumerate(apps):
            context = app.extensions["fleetcast.api"]
            workers.append(CompileWorker(context.jobs, counting, f"replica-{i}", poll=0.05))
            workers[-1].start()
        deadline = time.monotonic() + 120
        while True:
            finished = a.get("/api/v1/compile-jobs", headers=auth).json["items"]
            if all(j["state"] in ("succeeded", "failed") for j in finished):
                break
            assert time.monotonic() < deadline, "the jobs did not finish"
            time.sleep(0.05)
        assert [j["error"] for j in finished] == [None] * 6
        assert len(ran) == len(set(ran)) == 6
        assert {j["worker"] for j in finished} <= {"replica-0", "replica-1"}
        assert a.get("/api/v1/models/digits/versions/1", headers=auth).json["stage"] == "compiled"
    finally:
        for worker in workers:
            worker.stop()
        for repos in stores:
            repos.close()
