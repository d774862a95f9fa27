"""Uploaded files (source models, calibration and reference data), stored by sha256."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

from control_plane.errors import InvalidInput, NotFound

SHA256 = re.compile(r"[0-9a-f]{64}")
CHUNK = 1 << 16


class BlobStore:
    """``<root>/<sha256>``, written atomically; the same bytes twice are one file."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def put(self, chunks: Iterable[bytes]) -> tuple[str, int]:
        """Store the bytes; returns (sha256, size)."""
        self.root.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
            if size == 0:
                raise InvalidInput("empty upload: send the file as the request body")
            sha = digest.hexdigest()
            os.replace(tmp, self.root / sha)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return sha, size

    def path(self, sha256: str) -> Path:
        """The stored file; NotFound naming the hash when it was never uploaded."""
        if not SHA256.fullmatch(sha256):
            raise InvalidInput(f"sha256 {sha256!r}: expected 64 lowercase hex digits")
        path = self.root / sha256
        if not path.is_file():
            raise NotFound(f"no upload with sha256 {sha256}")
        return path

    def exists(self, sha256: str) -> bool:
        return bool(SHA256.fullmatch(sha256)) and (self.root / sha256).is_file()
