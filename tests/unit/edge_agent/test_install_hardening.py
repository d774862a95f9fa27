"""A refused install leaves both slots alone; the same deploy twice is a no-op; disk full is said.

Real packages (compiled and signed), real onnxruntime, real SQLite; disk full
is produced for real with ``PRAGMA max_page_count`` on the agent's own files.
"""

from __future__ import annotations

import hashlib
import sqlite3
import stat
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from test_install import make_agent
from zip_support import build_zip, deflated, stored, zeros_bomb

from edge_agent.errors import InstallError
from edge_agent.package import read_package
from edge_agent.slots import SlotStore
from edge_agent.transport.base import Command
from edge_agent.transport.memory import InMemoryTransport

pytestmark = pytest.mark.slow

MODEL = "digits-mlp"


def ref(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def unsigned(packages: Any, release: int, directory: Path) -> Path:
    """Release ``release`` of the digits model, signed by a key the device does not trust."""
    from control_plane.compiler.package import build_package

    manifest, _, model = read_package(packages.onnx.read_bytes())
    manifest = manifest.model_copy(update={"release": release})
    path = directory / f"unsigned-r{release}.fcpkg"
    path.write_bytes(build_package(manifest, model, Ed25519PrivateKey.generate()))
    return path


def sha(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def slot_sha(store: SlotStore, slot: str) -> str | None:
    return sha(store.package_path(slot))


@pytest.mark.parametrize("bad", ["unsigned", "selftest"])
def test_failed_install_keeps_active_and_previous(
    tmp_path: Path, edge_packages: Any, bad: str
) -> None:
    agent = make_agent(tmp_path / "state", edge_packages)
    store = SlotStore(tmp_path / "state" / "models" / MODEL)
    try:
        r1, r2 = edge_packages.onnx, edge_packages.release(2)
        agent.install_file(r1)
        agent.install_file(r2)
        before = store.pointer()
        assert before is not None and before.previous is not None
        package = (
            unsigned(edge_packages, 3, tmp_path)
            if bad == "unsigned"
            else edge_packages.bad_vectors(3)
        )
        with pytest.raises(InstallError) as info:
            agent.install_file(package)
        assert info.value.check == ("signature" if bad == "unsigned" else "selftest")
        assert store.pointer() == before
        assert slot_sha(store, "a") == sha(r1) and slot_sha(store, "b") == sha(r2)
        assert store.stray_files() == [] and store.journal() is None
        model = agent.installer.rollback(store, "operator")
        assert model.manifest.release == 1
    finally:
        agent.close()


def test_a_zip_bomb_sent_to_the_agent_is_refused_in_bounded_memory(
    tmp_path: Path, edge_packages: Any
) -> None:
    manifest, _, _ = read_package(edge_packages.onnx.read_bytes())
    body = manifest.model_copy(
        update={"model_file": manifest.model_file.model_copy(update={"size_bytes": 1 << 30})}
    ).canonical_bytes()
    bomb_path = tmp_path / "bomb.fcpkg"
    bomb_path.write_bytes(
        build_zip(
            [
                deflated("manifest.json", body),
                stored("manifest.sig", Ed25519PrivateKey.generate().sign(body)),
                zeros_bomb("model.onnx", 1),
            ]
        )
    )
    agent = make_agent(tmp_path / "state", edge_packages)
    try:
        agent.install_file(edge_packages.onnx)
        tracemalloc.start()
        try:
            with pytest.raises(InstallError) as info:
                agent.install_file(bomb_path)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert (info.value.step, info.value.check) == ("verify", "signature")
        size = bomb_path.stat().st_size
        assert peak < 2 * size + 16 * 1024 * 1024, f"a {size}-byte bomb peaked at {peak} bytes"
        assert agent.models[MODEL].manifest.release == 1
    finally:
        agent.close()


def test_deploying_the_active_package_again_is_a_no_op(tmp_path: Path, edge_packages: Any) -> None:
    transport = InMemoryTransport()
    agent = make_agent(tmp_path / "state", edge_packages, transport)
    store = SlotStore(tmp_path / "state" / "models" / MODEL)
    try:
        r1, r2 = edge_packages.onnx, edge_packages.release(2)
        for path in (r1, r2):
            transport.offer_package(ref(path), path.read_bytes())
        agent.handle_command(Command("c1", "deploy", {"sha256": ref(r1)}, execution_version=1))
        agent.handle_command(Command("c2", "deploy", {"sha256": ref(r2)}, execution_version=2))
        before = store.pointer()
        # a new command (new version) for the package already active: acked ok, nothing moves
        agent.handle_command(Command("c3", "deploy", {"sha256": ref(r2)}, execution_version=3))
        assert store.pointer() == before
        assert before is not None and before.previous is not None
        assert before.previous.release == 1 and slot_sha(store, "a") == sha(r1)
        assert [(a[0], a[1]) for a in transport.acks] == [("c1", True), ("c2", True), ("c3", True)]
        assert transport.acks[2][3]["note"] == "already active"
        agent.install_file(r2)  # the same through LoadModel: no-op too
        assert store.pointer() == before
    finally:
        agent.close()


def _fill(db: sqlite3.Connection, write: Any) -> None:
    """Cap the database file at its size, then ``write(n)`` until its free space is gone too."""
    (pages,) = db.execute("PRAGMA page_count").fetchone()
    db.execute(f"PRAGMA max_page_count={pages}")
    size, written = 64 * 1024, 0
    while size:
        try:
            write(size)
            written += 1
        except sqlite3.OperationalError as exc:
            assert "full" in str(exc)
            size //= 2
    assert written < 1000


def test_disk_full_during_a_deploy_is_acked_with_the_reason(
    tmp_path: Path, edge_packages: Any
) -> None:
    transport = InMemoryTransport()
    agent = make_agent(tmp_path / "state", edge_packages, transport)
    store = SlotStore(tmp_path / "state" / "models" / MODEL)
    try:
        agent.install_file(edge_packages.onnx)
        r2, r3 = edge_packages.release(2), edge_packages.release(3)
        for path in (r2, r3):
            transport.offer_package(ref(path), path.read_bytes())
        assert agent.outbox is not None
        outbox, log = agent.outbox._db, agent._command_log._db  # the agent's own connections
        _fill(outbox, lambda n: agent.outbox.put("status", {"event": "filler", "pad": "x" * n}))
        # the outbox is full: the install itself works and is acked; its report waits
        agent.handle_command(Command("c1", "deploy", {"sha256": ref(r2)}, execution_version=1))
        assert transport.acks[-1][:2] == ("c1", True)
        assert agent.models[MODEL].manifest.release == 2
        assert store.journal() is not None, "the report must be redone once there is space"
        # the command log is full too: the command cannot be recorded, and the ack says why
        versions = iter(range(-1, -1000, -1))  # below every real version: never "ran long ago"
        _fill(
            log,
            lambda n: log.execute(
                "INSERT INTO executed VALUES (?, 'filler', 1, '', ?)", (next(versions), "x" * n)
            ),
        )
        agent.handle_command(Command("c2", "deploy", {"sha256": ref(r3)}, execution_version=2))
        command_id, ok, error, detail = transport.acks[-1]
        assert (command_id, ok, detail["step"]) == ("c2", False, "storage")
        assert "database or disk is full" in error and "no transaction" not in error
        assert agent.models[MODEL].manifest.release == 2
    finally:
        agent.close()
    # space again (max_page_count holds per connection): the restarted agent reports
    # the install the full disk held back
    again = make_agent(tmp_path / "state", edge_packages, transport)
    try:
        assert store.journal() is None
        assert again.send_outbox() >= 1
    finally:
        again.close()
    installed = [m for m in transport.delivered_of("status") if m["event"] == "installed"]
    assert [m["release"] for m in installed] == [1, 2]


def test_agent_state_files_are_private(tmp_path: Path, edge_packages: Any) -> None:
    import os

    old = os.umask(0o022)
    try:
        agent = make_agent(tmp_path / "state", edge_packages)
        try:
            agent.install_file(edge_packages.onnx)
            agent.predict(MODEL, {"input": edge_packages.x[:2]})
            agent.flush_windows()
        finally:
            agent.close()
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "state").rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"outbox.sqlite", "commands.sqlite", "health-watches.json", "active.json"} <= names
    loose = {str(p.relative_to(tmp_path)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert {k: v for k, v in loose.items() if v != "0o600"} == {}


def test_outbox_full_write_raises_the_real_error(tmp_path: Path) -> None:
    from edge_agent.outbox import Outbox

    outbox = Outbox(tmp_path / "o.sqlite")
    outbox.put("status", {"event": "first"})
    (pages,) = outbox._db.execute("PRAGMA page_count").fetchone()
    outbox._db.execute(f"PRAGMA max_page_count={pages}")
    with pytest.raises(sqlite3.OperationalError, match="database or disk is full"):
        outbox.put("telemetry_window", {"pad": "x" * 200_000})
    outbox._db.execute("PRAGMA max_page_count=1073741823")
    assert outbox.put("status", {"event": "after"}) is not None
    assert [m.payload["event"] for m in outbox.pending()] == ["first", "after"]
    outbox.close()


def test_an_interrupted_rollback_is_acked_as_done(tmp_path: Path, edge_packages: Any) -> None:
    transport = InMemoryTransport()
    agent = make_agent(tmp_path / "state", edge_packages, transport)
    store = SlotStore(tmp_path / "state" / "models" / MODEL)
    try:
        agent.install_file(edge_packages.onnx)
        agent.install_file(edge_packages.release(2))
        # what a SIGKILL between the pointer switch and the ack leaves behind
        assert not agent._command_log.start(7, "rb")
        agent.installer.rollback(store, "operator")
    finally:
        agent.close()
    again = make_agent(tmp_path / "state", edge_packages, transport)
    try:
        again.handle_command(Command("rb", "rollback", {"model_name": MODEL}, execution_version=7))
        assert transport.acks[-1][:2] == ("rb", True)
        assert again.models[MODEL].manifest.release == 1
        again.handle_command(Command("rb", "rollback", {"model_name": MODEL}, execution_version=7))
        assert transport.acks[-1][:2] == ("rb", True)  # the recorded result, acked again
    finally:
        again.close()
