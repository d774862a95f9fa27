"""A/B install slots of one model in the agent's state directory.

Layout under ``<state>/models/<model name>/``::

    a/package.fcpkg      one verified package per slot
    b/package.fcpkg
    active.json          the pointer: which slot serves, and the previous one
    install.json         the journal of an install in progress (absent otherwise)

Every file is written to a temporary name, fsync'ed, renamed over the real
name and the directory fsync'ed, so after a crash a reader sees the old file
or the whole new one. The pointer switch is that one rename.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SLOTS = ("a", "b")
PACKAGE_NAME = "package.fcpkg"

Checkpoint = Callable[[str], None]


def _no_checkpoint(step: str) -> None:
    return None


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(
    path: Path, data: bytes, checkpoint: Checkpoint = _no_checkpoint, step: str = ""
) -> None:
    """Write ``data`` to ``path`` through a temporary file, fsync and rename.

    ``checkpoint(step + ".partial")`` runs with half the bytes written and
    ``checkpoint(step + ".rename")`` just before the rename (crash-test hooks).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            half = len(data) // 2
            handle.write(data[:half])
            if step:
                handle.flush()
                checkpoint(f"{step}.partial")
            handle.write(data[half:])
            handle.flush()
            os.fsync(handle.fileno())
        if step:
            checkpoint(f"{step}.rename")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


@dataclass(frozen=True)
class SlotRef:
    """A verified package in a slot."""

    slot: str
    sha256: str
    release: int
    package_id: str


@dataclass(frozen=True)
class Pointer:
    active: SlotRef
    previous: SlotRef | None = None
    install_id: str | None = None
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Pointer:
        prev = data.get("previous")
        return cls(
            active=SlotRef(**data["active"]),
            previous=SlotRef(**prev) if prev else None,
            install_id=data.get("install_id"),
            note=data.get("note", ""),
        )


@dataclass
class Journal:
    """An install in progress: enough to finish or abandon it after a crash."""

    install_id: str
    slot: str
    step: str
    source: str | None = None
    expected_sha256: str | None = None
    staged_sha256: str | None = None
    attempt: int = 1
    steps_done: list[str] = field(default_factory=list)


class SlotStore:
    """The files of one model's two slots (no locking: the agent serialises installs)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.pointer_path = root / "active.json"
        self.journal_path = root / "install.json"

    @property
    def model_name(self) -> str:
        return self.root.name

    def package_path(self, slot: str) -> Path:
        return self.root / slot / PACKAGE_NAME

    def pointer(self) -> Pointer | None:
        try:
            return Pointer.from_json(json.loads(self.pointer_path.read_text()))
        except FileNotFoundError:
            return None

    def inactive_slot(self) -> str:
        pointer = self.pointer()
        if pointer is None:
            return SLOTS[0]
        return SLOTS[1] if pointer.active.slot == SLOTS[0] else SLOTS[0]

    def write_pointer(self, pointer: Pointer, checkpoint: Checkpoint = _no_checkpoint) -> None:
        data = json.dumps(pointer.to_json(), indent=1).encode()
        write_atomic(self.pointer_path, data, checkpoint, "switch")

    def stage(self, slot: str, data: bytes, checkpoint: Checkpoint = _no_checkpoint) -> Path:
        path = self.package_path(slot)
        write_atomic(path, data, checkpoint, "stage")
        return path

    def slot_sha256(self, slot: str) -> str | None:
        """The sha256 of the package in ``slot`` (hashed in chunks), None when empty."""
        digest = hashlib.sha256()
        try:
            with self.package_path(slot).open("rb") as handle:
                while chunk := handle.read(1024 * 1024):
                    digest.update(chunk)
        except FileNotFoundError:
            return None
        return digest.hexdigest()

    def clear_slot(self, slot: str) -> None:
        pointer = self.pointer()
        if pointer is not None and pointer.active.slot == slot:
            raise RuntimeError(f"refusing to clear the active slot {slot}")
        directory = self.root / slot
        if directory.exists():
            for child in directory.iterdir():
                child.unlink()
            fsync_dir(directory)

    def journal(self) -> Journal | None:
        try:
            return Journal(**json.loads(self.journal_path.read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as exc:  # a journal is always written atomically
            logger.error("%s: unreadable install journal (%s); dropping it", self.root, exc)
            self.clear_journal()
            return None

    def write_journal(self, journal: Journal) -> None:
        write_atomic(self.journal_path, json.dumps(asdict(journal), indent=1).encode())

    def clear_journal(self) -> None:
        if self.journal_path.exists():
            self.journal_path.unlink()
            fsync_dir(self.root)

    def stray_files(self) -> list[Path]:
        """Temporary files left by a crash (cleaned up on recovery)."""
        return sorted(p for p in self.root.rglob(".*.tmp") if p.is_file())


def model_stores(state_dir: Path) -> list[SlotStore]:
    models = state_dir / "models"
    if not models.is_dir():
        return []
    return [SlotStore(p) for p in sorted(models.iterdir()) if p.is_dir()]
