"""Packages: a signed .fcpkg is verified before it enters the catalog; downloads are scoped."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from control_plane.errors import InvalidInput, NotFound
from control_plane.services import Clock
from control_plane.store.records import DEFAULT_LIMIT, Package, Page
from control_plane.store.repos import Repositories
from edge_agent.errors import PackageError
from edge_agent.package import open_package


class PackageService:
    """Package files live in ``package_dir`` by sha256; their rows in the catalog."""

    def __init__(
        self,
        repos: Repositories,
        public_key: Ed25519PublicKey | None,
        package_dir: Path,
        clock: Clock = time.time,
        trusted: Callable[[], Sequence[Ed25519PublicKey]] | None = None,
    ) -> None:
        self.repos = repos
        self.public_key = public_key
        self.package_dir = package_dir
        self.clock = clock
        self.trusted = trusted  # the key directory's current and previous keys (rotation)

    def trusted_keys(self) -> list[Ed25519PublicKey]:
        """``public_key`` and the keys a rotation keeps trusted (``services/keys.py``)."""
        keys = [self.public_key] if self.public_key is not None else []
        return keys + [k for k in (self.trusted() if self.trusted else []) if k not in keys]

    def register(self, path: Path, actor: str, *, require_version: bool = False) -> Package:
        """Verify a package file (open_package's named checks), store it, record it.

        With ``require_version`` (the REST API) its model version must be in the
        catalog already, so that it can be deployed by version.
        """
        keys = self.trusted_keys()
        if not keys:
            raise InvalidInput(
                "no package signing public key: run `fleetcast keys generate` "
                "(or copy the compile host's fleetcast.pub into <data dir>/keys/)"
            )
        try:
            package = open_package(path, keys)
        except PackageError as exc:
            raise InvalidInput(f"package {path}: {exc}") from exc
        m = package.manifest
        if require_version:
            try:
                self.repos.versions.get(m.model_name, m.model_version)
            except NotFound:
                raise NotFound(
                    f"package {m.package_id} is of {m.model_name} {m.model_version}, which the "
                    "catalog does not hold: register the version first "
                    "(`fleetcast versions register`)"
                ) from None
        self.package_dir.mkdir(parents=True, exist_ok=True)
        stored = self.package_dir / f"{package.sha256}.fcpkg"
        if not stored.exists():  # write then rename: a reader never sees half a file
            fd, tmp = tempfile.mkstemp(dir=self.package_dir, suffix=".part")
            with os.fdopen(fd, "wb") as handle:
                handle.write(path.read_bytes())
            os.replace(tmp, stored)
        row = self.repos.packages.put(
            Package(
                sha256=package.sha256,
                package_id=m.package_id,
                model_name=m.model_name,
                model_version=m.model_version,
                profile_id=m.profile.id,
                release=m.release,
                size_bytes=package.size_bytes,
                path=str(stored),
                manifest=m.model_dump(mode="json"),
                created_at=self.clock(),
            )
        )
        self.repos.audit.add(
            actor, "package.add", package.sha256, self.clock(), detail={"package_id": m.package_id}
        )
        return row

    def get(self, sha256: str) -> Package:
        return self.repos.packages.get(sha256)

    def list(
        self,
        *,
        model_name: str | None = None,
        model_version: str | None = None,
        profile_id: str | None = None,
        limit: int = DEFAULT_LIMIT,
        offset: int = 0,
    ) -> Page[Package]:
        return self.repos.packages.list(
            model_name=model_name,
            model_version=model_version,
            profile_id=profile_id,
            limit=limit,
            offset=offset,
        )

    def path_for_device(self, device_id: str, sha256: str) -> Path:
        """The file of a catalog package a deploy command sent to this device; else NotFound."""
        package = self.repos.packages.get(sha256)
        if not self.repos.commands.sent_package(device_id, sha256):
            raise NotFound(f"package {sha256} was never deployed to device {device_id!r}")
        path = Path(package.path)
        if not path.exists():
            raise NotFound(f"package {sha256}: its file {path} is missing on this replica")
        return path
