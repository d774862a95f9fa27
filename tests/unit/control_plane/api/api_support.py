"""An API on an in-memory store: a token per role, a device credential, a seeded catalog."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from flask import Flask
from flask.testing import FlaskClient

from control_plane.api import ApiOptions, create_api
from control_plane.api.context import ApiContext
from control_plane.services.compile_jobs import BuiltPackage, CompileTask, ProgressFn
from control_plane.services.tokens import Principal, TokenService, hash_secret
from control_plane.settings import Settings
from control_plane.store.factory import open_repositories
from control_plane.store.records import ROLES, NewDevice, Package
from control_plane.store.sql.store import SqlRepositories

ROOT = Path(__file__).resolve().parents[4]
PROFILE = "x86-64-generic"
DEVICE_ID = "cam-1"
DEVICE_SECRET = "device-secret-from-enrollment"


def npz_bytes(**arrays: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.savez(out, **arrays)  # type: ignore[arg-type]
    return out.getvalue()


def fake_runner(out_dir: Path) -> Callable[[CompileTask, ProgressFn], list[BuiltPackage]]:
    """Writes one small file per profile, as the pipeline writes one package per profile."""

    def run(task: CompileTask, progress: ProgressFn) -> list[BuiltPackage]:
        built = []
        for i, profile in enumerate(task.job.profiles):
            progress((i + 1) / (len(task.job.profiles) + 1), f"building for {profile}")
            data = f"{task.job.model}/{task.job.version}/{profile}/{task.release}".encode()
            path = out_dir / f"{profile}.fcpkg"
            out_dir.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            built.append(
                BuiltPackage(
                    profile_id=profile,
                    path=path,
                    sha256=hashlib.sha256(data).hexdigest(),
                    size_bytes=len(data),
                    package_id=f"{task.job.model}-{task.job.version}-{profile}-r{task.release}",
                    release=task.release,
                    manifest={"profile": profile},
                    summary={"profile": profile, "size_bytes": len(data)},
                )
            )
        return built

    return run


@dataclass
class Api:
    app: Flask
    client: FlaskClient
    repos: SqlRepositories
    bearer: dict[str, str] = field(default_factory=dict)  # role (or "device") -> token
    seeded: dict[str, str] = field(default_factory=dict)

    @property
    def context(self) -> ApiContext:
        context: ApiContext = self.app.extensions["fleetcast.api"]
        return context

    def headers(self, who: str | None = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.bearer[who]}"} if who else {}

    def call(self, method: str, url: str, who: str | None = "admin", **kwargs: Any) -> Any:
        return self.client.open(url, method=method, headers=self.headers(who), **kwargs)

    def upload(self, data: bytes) -> str:
        answer = self.call(
            "POST", "/api/v1/uploads", data=data, content_type="application/octet-stream"
        )
        assert answer.status_code == 201, answer.json
        return str(answer.json["sha256"])


def make_api(tmp_path: Path, **options: Any) -> Api:
    repos = open_repositories(":memory:")
    settings = Settings(data_dir=tmp_path / "data", profiles_dir=ROOT / "hardware-profiles")
    opts = ApiOptions(runner=fake_runner(tmp_path / "packages"), **options)
    app = create_api(repos, settings, opts)
    api = Api(app, app.test_client(), repos)
    tokens = TokenService(repos, api.context.audit)
    for role in ROLES:
        _, secret = tokens.create(f"{role}-token", role, Principal("test", "admin"))
        api.bearer[role] = secret
    repos.devices.add(NewDevice(DEVICE_ID, hash_secret(DEVICE_SECRET)), at=1.0)
    api.bearer["device"] = f"{DEVICE_ID}.{DEVICE_SECRET}"
    return api


def seed(api: Api) -> None:
    """A model with a compiled version, an alias, a package, a queued job and a spare token."""
    rng = np.random.default_rng(0)
    x = rng.random((8, 64), dtype=np.float32)
    source = api.upload(b"onnx model bytes")
    calibration = api.upload(npz_bytes(input=x))
    validation = api.upload(npz_bytes(input=x[:4]))
    assert (
        api.call("POST", "/api/v1/models", json={"name": "digits", "owner": "ml"}).status_code
        == 201
    )
    for version in ("1", "2"):
        answer = api.call(
            "POST",
            "/api/v1/models/digits/versions",
            json={
                "version": version,
                "card": {
                    "intended_use": "digits",
                    "training_data": "sklearn digits",
                    "owner": "ml",
                },
                "source_sha256": source,
                "source_format": "onnx",
                "data": {"calibration": calibration, "validation": validation},
            },
        )
        assert answer.status_code == 201, answer.json
    sha = hashlib.sha256(b"package").hexdigest()
    api.repos.packages.put(
        Package(sha, "digits-1-x86", "digits", "1", PROFILE, 1, 7, "/nowhere", {}, 2.0)
    )
    assert (
        api.call("PUT", "/api/v1/models/digits/aliases/staging", json={"version": "1"}).status_code
        == 200
    )
    job = api.call(
        "POST",
        "/api/v1/compile-jobs",
        json={"model": "digits", "version": "1", "profiles": [PROFILE]},
    )
    assert job.status_code == 202, job.json
    spare = api.call("POST", "/api/v1/tokens", json={"name": "spare", "role": "viewer"})
    api.seeded.update(package=sha, job=job.json["id"], token=spare.json["id"], source=source)


def seed_deployable(api: Api) -> None:
    """digits 9 compiled for x86-64-generic, and an active x86 device labelled site=lab."""
    card = {"intended_use": "digits", "training_data": "sklearn digits", "owner": "ml"}
    answer = api.call("POST", "/api/v1/models/digits/versions", json={"version": "9", "card": card})
    assert answer.status_code == 201, answer.json
    sha = hashlib.sha256(b"package 9").hexdigest()
    api.repos.packages.put(
        Package(sha, "digits-9-x86", "digits", "9", PROFILE, 1, 9, "/nowhere", {}, 3.0)
    )
    moved = api.call("POST", "/api/v1/models/digits/versions/9/stage", json={"stage": "compiled"})
    assert moved.status_code == 200, moved.json
    api.repos.devices.add(
        NewDevice("cam-2", hash_secret("cam-2-secret"), labels={"site": "lab"}, profile_id=PROFILE),
        at=4.0,
    )
    api.seeded["package9"] = sha


def seed_monitored(api: Api) -> None:
    """A digits 1 package whose catalog manifest has reference statistics (monitoring routes)."""
    from tests.unit.control_plane.monitoring_support import monitored_manifest

    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    scores = rng.dirichlet(np.ones(3), size=200).astype(np.float32)
    manifest = monitored_manifest(x, scores)
    sha = hashlib.sha256(b"monitored package").hexdigest()
    api.repos.packages.put(
        Package(sha, manifest.package_id, "digits", "1", PROFILE, 1, 1, "/nowhere",
                manifest.model_dump(mode="json"), 1.5)
    )  # fmt: skip
    api.seeded["monitored"] = sha
