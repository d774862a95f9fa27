"""Install a package into a model's inactive slot, switch, roll back, recover after a crash.

An install runs these steps, recording each in the slot journal before it
starts, and calling ``checkpoint(name)`` at every name in :data:`CRASH_POINTS`
(the crash tests SIGKILL the agent there):

1. ``verify``: package hash, format, signature, model hash, profile, release (in memory)
2. ``load``: load the model with its runtime (from memory)
3. ``selftest``: run the manifest's test vectors; outputs must match within atol/rtol
4. ``stage``: write the package into the inactive slot (temp file, fsync, rename)
5. ``switch``: rewrite ``active.json`` to point at the new slot (fsync + rename)
6. ``report``: queue the status report in the outbox, drop the journal

Nothing touches a slot before the package passed verify, load and self-test,
so a refused package leaves the active and the previous (rollback) version
intact. A step that fails reports the step and the reason and leaves the
active slot serving; only a failure after staging clears the staged slot.
After a crash, :meth:`Installer.recover` finishes an install whose switch
already happened (report, drop journal), re-runs one that did not from the
staged or source file (once), or abandons it cleanly (clear what it staged,
report) when neither is available. Every step is idempotent, so running it
twice is harmless.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.core.host import HostInfo
from edge_agent.errors import EdgeError, InstallError, PackageError
from edge_agent.package import Package, TrustedKeys, open_package
from edge_agent.runtime import Model
from edge_agent.runtime.selftest import self_test
from edge_agent.slots import Checkpoint, Journal, Pointer, SlotRef, SlotStore

if TYPE_CHECKING:
    from edge_agent.core.manifest import Manifest

logger = logging.getLogger(__name__)

STEPS = ("verify", "load", "selftest", "stage", "switch", "report")
CRASH_POINTS = (
    "received",
    "verify",
    "load",
    "selftest",
    "stage",
    "stage.partial",
    "stage.rename",
    "switch",
    "switch.partial",
    "switch.rename",
    "switched",
    "report",
)
MAX_ATTEMPTS = 2

Reporter = Callable[[dict[str, Any], str], None]
ModelFactory = Callable[[Package["Manifest"]], Model]


def release_slot(store: SlotStore, slot: str) -> None:
    """Clear what an abandoned install left in ``slot``, keeping an intact rollback copy.

    If the install got as far as replacing the previous version's file, the
    pointer stops naming a previous version (it is gone), so a later rollback
    says so instead of failing on a hash mismatch.
    """
    pointer = store.pointer()
    if pointer is not None and pointer.active.slot == slot:
        return
    previous = pointer.previous if pointer is not None else None
    if pointer is not None and previous is not None and previous.slot == slot:
        if store.slot_sha256(slot) == previous.sha256:
            return  # the rollback copy was never touched
        logger.warning("%s: previous version %s was overwritten", store.model_name, previous)
        store.write_pointer(
            replace(pointer, previous=None, note=f"previous {previous.package_id} overwritten")
        )
    store.clear_slot(slot)


def _ref(slot: str, package: Package[Manifest]) -> SlotRef:
    m = package.manifest
    return SlotRef(slot=slot, sha256=package.sha256, release=m.release, package_id=m.package_id)


class Installer:
    """Installs, rolls back and recovers the slots under ``<state>/models``."""

    def __init__(
        self,
        state_dir: Path,
        public_key: TrustedKeys,
        host: HostInfo | None,
        make_model: ModelFactory,
        report: Reporter,
        checkpoint: Checkpoint,
    ) -> None:
        self.models_dir = state_dir / "models"
        self.public_key = public_key
        self.host = host
        self.make_model = make_model
        self.report = report
        self.checkpoint = checkpoint

    def store(self, model_name: str) -> SlotStore:
        return SlotStore(self.models_dir / model_name)

    # -- install

    def install(
        self,
        data: bytes,
        *,
        source: str | None = None,
        expected_sha256: str | None = None,
        install_id: str | None = None,
        attempt: int = 1,
        context: dict[str, Any] | None = None,
    ) -> Model:
        """Run every install step; return the new model, now active. Raises InstallError.

        The package is verified, loaded and self-tested from memory before any
        slot is written: a package that fails leaves both slots as they were.
        """
        install_id = install_id or uuid.uuid4().hex[:12]
        extra = {"install_id": install_id, **(context or {})}
        self.checkpoint("received")
        try:  # in memory: format, hashes, signature (first), profile; nothing written yet
            package = open_package(
                data, self.public_key, host=self.host, expected_sha256=expected_sha256
            )
        except PackageError as exc:
            self._failed(None, "verify", exc.check, exc.detail, extra)
            raise InstallError("verify", exc.detail, exc.check) from exc
        manifest = package.manifest
        store = self.store(manifest.model_name)
        slot = store.inactive_slot()
        journal = Journal(install_id, slot, "verify", source, expected_sha256, attempt=attempt)
        extra.update(
            model_name=manifest.model_name,
            model_version=manifest.model_version,
            package_id=manifest.package_id,
        )
        step = "verify"
        try:
            store.write_journal(journal)
            self.checkpoint("verify")
            pointer = store.pointer()
            if pointer is not None and manifest.release < pointer.active.release:
                raise PackageError(
                    "release",
                    f"release {manifest.release} is older than installed release "
                    f"{pointer.active.release}",
                )
            step = self._advance(store, journal, "load")
            model = self.make_model(package)
            step = self._advance(store, journal, "selftest")
            problems = self_test(model.loaded, manifest)
            if problems:
                raise InstallError("selftest", "; ".join(problems), "selftest")
            step = self._advance(store, journal, "stage")
            store.stage(slot, data, self.checkpoint)
            journal.staged_sha256 = package.sha256
            step = self._advance(store, journal, "switch")
            new = Pointer(
                active=_ref(slot, package),
                previous=pointer.active if pointer else None,
                install_id=install_id,
            )
            store.write_pointer(new, self.checkpoint)
            self.checkpoint("switched")
        except (EdgeError, OSError) as exc:
            check = exc.check if isinstance(exc, (PackageError, InstallError)) else None
            detail = exc.detail if isinstance(exc, (PackageError, InstallError)) else str(exc)
            self._abandon(store, journal, "install_failed", step, check, detail, extra)
            if isinstance(exc, InstallError):
                raise
            raise InstallError(step, detail, check) from exc
        self._finish(store, new, extra)
        return model

    def _advance(self, store: SlotStore, journal: Journal, step: str) -> str:
        journal.steps_done.append(journal.step)
        journal.step = step
        store.write_journal(journal)
        self.checkpoint(step)
        return step

    def _queue_report(self, fields: dict[str, Any], dedupe_key: str) -> bool:
        """Queue a status report; a storage failure (disk full) is logged, never raised.

        The report must not hide the install's own outcome, nor stop a failed
        install from cleaning up after itself.
        """
        try:
            self.report(fields, dedupe_key)
        except sqlite3.Error as exc:
            logger.error("could not queue report %s: %s", dedupe_key, exc)
            return False
        return True

    def _finish(self, store: SlotStore, pointer: Pointer, extra: dict[str, Any]) -> None:
        active = pointer.active
        previous = pointer.previous
        queued = self._queue_report(
            {
                "event": "installed",
                **extra,
                "model_name": store.model_name,
                "package_id": active.package_id,
                "sha256": active.sha256,
                "release": active.release,
                "slot": active.slot,
                "previous_package_id": previous.package_id if previous else None,
            },
            f"install:{pointer.install_id}:installed",
        )
        self.checkpoint("report")
        if not queued:  # the journal stays: the next start reports the install
            return
        store.clear_journal()
        logger.info("%s: installed %s in slot %s", store.model_name, active.package_id, active.slot)

    def _failed(
        self,
        store: SlotStore | None,
        step: str,
        check: str | None,
        reason: str,
        extra: dict[str, Any],
        event: str = "install_failed",
    ) -> None:
        logger.warning("install %s %s at %s: %s", extra.get("install_id"), event, step, reason)
        self._queue_report(
            {"event": event, **extra, "step": step, "check": check, "reason": reason},
            f"install:{extra.get('install_id')}:{event}",
        )

    def _abandon(
        self,
        store: SlotStore,
        journal: Journal,
        event: str,
        step: str,
        check: str | None,
        reason: str,
        extra: dict[str, Any],
    ) -> None:
        release_slot(store, journal.slot)
        self._failed(store, step, check, reason, extra, event)
        store.clear_journal()

    # -- after a crash

    def recover(self, store: SlotStore) -> Model | None:
        """Bring one model's slots to a clean state; return the verified active model."""
        for stray in store.stray_files():
            logger.info("removing %s left by an interrupted write", stray)
            stray.unlink()
        journal = store.journal()
        pointer = store.pointer()
        if journal is not None:
            extra = {
                "install_id": journal.install_id,
                "model_name": store.model_name,
                "recovered": True,
            }
            if pointer is not None and pointer.install_id == journal.install_id:
                logger.info(
                    "%s: install %s had switched; finishing", store.model_name, journal.install_id
                )
                self._finish(store, pointer, extra)
            else:
                data = self._resume_data(store, journal)
                if data is not None and journal.attempt < MAX_ATTEMPTS:
                    logger.info(
                        "%s: resuming install %s interrupted at %s",
                        store.model_name,
                        journal.install_id,
                        journal.step,
                    )
                    try:
                        return self.install(
                            data,
                            source=journal.source,
                            expected_sha256=journal.expected_sha256,
                            install_id=journal.install_id,
                            attempt=journal.attempt + 1,
                            context={"recovered": True, "interrupted_at": journal.step},
                        )
                    except InstallError:
                        pass  # reported; the active slot serves
                else:
                    reason = (
                        f"interrupted at {journal.step} (attempt {journal.attempt}); "
                        "no complete package left to resume from"
                    )
                    self._abandon(
                        store, journal, "install_abandoned", journal.step, None, reason, extra
                    )
        return self.load_active(store)

    def _resume_data(self, store: SlotStore, journal: Journal) -> bytes | None:
        staged = store.package_path(journal.slot)
        if journal.staged_sha256 and staged.exists():
            data = staged.read_bytes()
            if hashlib.sha256(data).hexdigest() == journal.staged_sha256:
                return data
        if journal.source and Path(journal.source).is_file():
            return Path(journal.source).read_bytes()
        return None

    def _verified(self, store: SlotStore, ref: SlotRef) -> Model:
        package = open_package(
            store.package_path(ref.slot), self.public_key, expected_sha256=ref.sha256
        )
        model = self.make_model(package)
        problems = self_test(model.loaded, package.manifest)
        if problems:
            raise InstallError("selftest", "; ".join(problems), "selftest")
        return model

    def load_active(self, store: SlotStore) -> Model | None:
        """The active slot's model, verified again; falls back to the previous slot."""
        pointer = store.pointer()
        if pointer is None:
            return None
        try:
            return self._verified(store, pointer.active)
        except (EdgeError, OSError) as exc:
            logger.error(
                "%s: active slot %s fails verification: %s",
                store.model_name,
                pointer.active.slot,
                exc,
            )
            if pointer.previous is None:
                return None
            try:
                return self.rollback(
                    store, f"active slot failed verification: {exc}", "verification"
                )
            except InstallError:
                return None

    def rollback(self, store: SlotStore, reason: str, cause: str = "command") -> Model:
        """Point back at the previous slot (verified again) and report why.

        ``cause`` says who decided: ``command`` (the control plane), ``health`` (the
        agent's own health watch) or ``verification`` (the active slot failed it at start).
        """
        pointer = store.pointer()
        if pointer is None or pointer.previous is None:
            raise InstallError("rollback", "no previous version to roll back to", "rollback")
        previous = pointer.previous
        try:
            model = self._verified(store, previous)
        except (EdgeError, OSError) as exc:
            raise InstallError("rollback", f"previous slot unusable: {exc}", "rollback") from exc
        store.write_pointer(
            Pointer(
                active=previous,
                previous=None,
                install_id=pointer.install_id,
                note=f"rolled back from {pointer.active.package_id}: {reason}",
            )
        )
        self.report(
            {
                "event": "rolled_back",
                "model_name": store.model_name,
                "package_id": previous.package_id,
                "model_version": model.manifest.model_version,
                "sha256": previous.sha256,
                "release": previous.release,
                "from_package_id": pointer.active.package_id,
                "from_sha256": pointer.active.sha256,
                "cause": cause,
                "reason": reason,
            },
            f"rollback:{pointer.install_id}:{pointer.active.sha256}",
        )
        logger.warning("%s: rolled back to %s: %s", store.model_name, previous.package_id, reason)
        return model
