"""File modes of the agent's state: data files are 0600 whatever the umask.

The state directory holds captures (inputs the device scored), credentials
and the install journal; other local users have no business reading them.
SQLite creates its ``-wal`` and ``-shm`` files with the database file's mode,
so creating the database 0600 first covers them too.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

PRIVATE = 0o600
SOCKET = 0o660


def private_file(path: Path) -> Path:
    """Create ``path`` (empty) with mode 0600 if missing, or tighten it to 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE)
    try:
        os.fchmod(fd, PRIVATE)
    finally:
        os.close(fd)
    for companion in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if companion.exists():
            companion.chmod(PRIVATE)
    return path


def open_private(path: Path, mode: str = "w") -> int:
    """A file descriptor on ``path`` created 0600 (truncated for ``w``, appended for ``a``)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if mode == "a" else os.O_TRUNC)
    fd = os.open(path, flags, PRIVATE)
    os.fchmod(fd, PRIVATE)
    return fd
