"""Resumable package download shared by the transports.

Bytes go to ``<dir>/<sha256>.part`` as they arrive (fsynced every 4 MiB), so a cut (broker or server
restarted, network gone, agent restarted) resumes from the bytes already on
disk: at most the chunk in flight is sent again. The whole file's sha256 must
equal the package's content address before the bytes are handed to install.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from edge_agent.core.backoff import Backoff
from edge_agent.core.limits import MAX_PACKAGE_BYTES
from edge_agent.files import open_private
from edge_agent.transport.base import TransportError

logger = logging.getLogger(__name__)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
SYNC_EVERY = 4 * 1024 * 1024


@dataclass(frozen=True)
class Block:
    offset: int
    data: bytes
    total_size: int
    last: bool


class Fatal(TransportError):
    """A failure retrying cannot fix (unknown package, bad hash): stop at once."""


OpenStream = Callable[[str, int], Iterator[Block]]


def resumable_download(
    sha256: str,
    directory: Path,
    open_stream: OpenStream,
    *,
    deadline_seconds: float = 600.0,
    backoff: Backoff | None = None,
) -> bytes:
    """Fetch package ``sha256`` through ``open_stream(sha256, offset)``, resuming after cuts."""
    if not _SHA256.match(sha256):
        raise Fatal(f"package reference {sha256!r} is not a sha256")
    directory.mkdir(parents=True, exist_ok=True)
    part = directory / f"{sha256}.part"
    backoff = backoff or Backoff()
    deadline = time.monotonic() + deadline_seconds
    while True:
        offset = part.stat().st_size if part.exists() else 0
        try:
            done = _pull(open_stream(sha256, offset), part, offset)
        except Fatal:
            part.unlink(missing_ok=True)
            raise
        except TransportError as exc:
            if time.monotonic() >= deadline:
                raise TransportError(f"download of {sha256[:12]} gave up: {exc}") from exc
            delay = backoff.next()
            logger.info(
                "download %s cut at %d bytes (%s); resuming in %.1f s",
                sha256[:12],
                part.stat().st_size if part.exists() else 0,
                exc,
                delay,
            )
            time.sleep(delay)
            continue
        if done:
            backoff.reset()
            break
    data = part.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    part.unlink()
    if actual != sha256:
        raise Fatal(f"downloaded package sha256 {actual} != requested {sha256}")
    return data


def _pull(blocks: Iterator[Block], part: Path, offset: int) -> bool:
    synced = offset
    with os.fdopen(open_private(part, "a"), "ab") as handle:
        for block in blocks:
            if block.offset != offset:
                raise TransportError(f"block at offset {block.offset}, expected {offset}")
            if block.total_size > MAX_PACKAGE_BYTES or offset + len(block.data) > block.total_size:
                raise Fatal(
                    f"package of {block.total_size} bytes (limit {MAX_PACKAGE_BYTES}) "
                    f"or a block past its end at offset {offset}"
                )
            handle.write(block.data)
            handle.flush()
            offset += len(block.data)
            if offset - synced >= SYNC_EVERY:  # bounded loss on power cut, not a sync per block
                os.fsync(handle.fileno())
                synced = offset
            if block.last:
                if offset != block.total_size:
                    raise Fatal(f"download ended at {offset} of {block.total_size} bytes")
                return True
    raise TransportError(f"stream ended at {offset} bytes without its last block")
