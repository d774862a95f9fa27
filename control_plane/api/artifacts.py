"""Uploads (source models, calibration/validation/reference data), packages, compile jobs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from flask import Response, request, send_file
from flask_openapi3.blueprint import APIBlueprint
from flask_openapi3.models.tag import Tag

from control_plane.api.auth import current_principal
from control_plane.api.context import api_context, paged
from control_plane.api.schemas import (
    JobIn,
    JobList,
    JobOut,
    JobPath,
    JobQuery,
    PackageList,
    PackageOut,
    PackagePath,
    PackageQuery,
    UploadOut,
)
from control_plane.errors import InvalidInput
from control_plane.store.records import CompileJob, Package

SECURITY: list[dict[str, list[str]]] = [{"bearer": []}]
CHUNK = 1 << 16

uploads = APIBlueprint(
    "uploads",
    __name__,
    url_prefix="/api/v1",
    abp_tags=[Tag(name="uploads", description="files stored by sha256")],
    abp_security=SECURITY,
)
packages = APIBlueprint(
    "packages",
    __name__,
    url_prefix="/api/v1",
    abp_tags=[Tag(name="packages", description="signed packages per version and profile")],
    abp_security=SECURITY,
)
compile_jobs = APIBlueprint(
    "compile",
    __name__,
    url_prefix="/api/v1",
    abp_tags=[Tag(name="compile", description="compile jobs run in the background")],
    abp_security=SECURITY,
)


def _body_chunks() -> Iterator[bytes]:
    while chunk := request.stream.read(CHUNK):
        yield chunk


@uploads.post(
    "/uploads",
    responses={201: UploadOut},
    openapi_extensions={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
def upload() -> tuple[dict[str, Any], int]:
    """Store the raw request body (a model or an .npz); answers its sha256 to register with."""
    context = api_context()
    request.max_content_length = context.max_upload_bytes
    length = request.content_length
    if length is not None and length > context.max_upload_bytes:
        from werkzeug.exceptions import RequestEntityTooLarge

        raise RequestEntityTooLarge()
    sha, size = context.catalog.blobs.put(_body_chunks())
    context.audit.record(
        current_principal().name, "upload.create", f"upload:{sha}", after={"size_bytes": size}
    )
    return {"sha256": sha, "size_bytes": size}, 201


def package_view(package: Package) -> dict[str, Any]:
    view = asdict(package)
    view.pop("path")  # where the control plane keeps it is not the client's business
    return view


@packages.get("/packages", responses={200: PackageList})
def list_packages(query: PackageQuery) -> dict[str, Any]:
    """Packages in the catalog (filter by model, version, profile)."""
    page = api_context().packages.list(
        model_name=query.model,
        model_version=query.version,
        profile_id=query.profile,
        limit=query.limit,
        offset=query.offset,
    )
    return paged(page, [package_view(p) for p in page.items])


@packages.get("/packages/<sha256>", responses={200: PackageOut})
def get_package(path: PackagePath) -> dict[str, Any]:
    """One package with its manifest."""
    return package_view(api_context().packages.get(path.sha256))


@packages.post(
    "/packages",
    responses={201: PackageOut},
    openapi_extensions={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
def add_package() -> tuple[dict[str, Any], int]:
    """Add a signed .fcpkg (the raw body) to the catalog: verified (hashes, a trusted key's
    signature) first; 400 naming the failed check. Its model version must be registered."""
    import tempfile
    from pathlib import Path

    context = api_context()
    request.max_content_length = context.max_upload_bytes
    with tempfile.TemporaryDirectory(prefix="fcpkg-") as tmp:
        path = Path(tmp) / "upload.fcpkg"
        with path.open("wb") as out:
            for chunk in _body_chunks():
                out.write(chunk)
        if path.stat().st_size == 0:
            raise InvalidInput("the request body is empty: send the .fcpkg file's bytes")
        added = context.packages.register(path, current_principal().name, require_version=True)
    return package_view(added), 201


def job_view(job: CompileJob) -> dict[str, Any]:
    view = asdict(job)
    view["profiles"] = list(job.profiles)
    return view


@compile_jobs.post("/compile-jobs", responses={202: JobOut})
def submit_job(body: JobIn) -> tuple[dict[str, Any], int]:
    """Queue a compile of a registered version (all profiles when none is named)."""
    job = api_context().jobs.submit(body.model, body.version, body.profiles, current_principal())
    return job_view(job), 202


@compile_jobs.get("/compile-jobs", responses={200: JobList})
def list_jobs(query: JobQuery) -> dict[str, Any]:
    """Compile jobs, newest first (filter by state, model)."""
    page = api_context().jobs.list(
        state=query.state, model=query.model, limit=query.limit, offset=query.offset
    )
    return paged(page, [job_view(j) for j in page.items])


@compile_jobs.get("/compile-jobs/<job_id>", responses={200: JobOut})
def get_job(path: JobPath) -> dict[str, Any]:
    """One job: state, progress (0..1), log and, once finished, the report or the error."""
    return job_view(api_context().jobs.get(path.job_id))


@compile_jobs.post("/compile-jobs/<job_id>/cancel", responses={200: JobOut})
def cancel_job(path: JobPath) -> dict[str, Any]:
    """Cancel a queued or running job (a running compile stops at its next step); 409 if ended."""
    return job_view(api_context().jobs.cancel(path.job_id, current_principal()))


@packages.get(
    "/packages/<sha256>/file",
    responses={200: None},
    openapi_extensions={
        "responses": {
            "200": {
                "description": "the signed .fcpkg",
                "content": {"application/octet-stream": {"schema": {"type": "string"}}},
            }
        }
    },
)
def download_package(path: PackagePath) -> Response:
    """The signed package file (for batch scoring and function containers; verify it with
    the fleet's public key before use, as the agent does)."""
    from control_plane.errors import NotFound

    package = api_context().packages.get(path.sha256)
    stored = Path(package.path)
    if not stored.is_file():
        raise NotFound(f"package {path.sha256}: its file is missing on this replica")
    return send_file(
        stored,
        mimetype="application/octet-stream",
        as_attachment=True,
        download_name=f"{package.package_id}.fcpkg",
        etag=package.sha256,
    )
