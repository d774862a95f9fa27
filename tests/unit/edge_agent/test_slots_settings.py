"""Slot files (atomic writes, pointer, journal) and settings from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.settings import Settings, SettingsError
from edge_agent.slots import Journal, Pointer, SlotRef, SlotStore, write_atomic


class Crash(Exception):
    pass


def crash_at(name: str):  # type: ignore[no-untyped-def]
    def checkpoint(step: str) -> None:
        if step == name:
            raise Crash(step)

    return checkpoint


@pytest.mark.parametrize("point", ["stage.partial", "stage.rename"])
def test_interrupted_write_leaves_the_old_file(tmp_path: Path, point: str) -> None:
    path = tmp_path / "slot" / "package.fcpkg"
    write_atomic(path, b"old")
    with pytest.raises(Crash):
        write_atomic(path, b"new" * 1000, crash_at(point), "stage")
    assert path.read_bytes() == b"old"
    assert list(path.parent.glob(".*.tmp")) == []


def test_pointer_and_journal_round_trip(tmp_path: Path) -> None:
    store = SlotStore(tmp_path / "models" / "m")
    assert store.pointer() is None and store.inactive_slot() == "a"
    pointer = Pointer(active=SlotRef("a", "0" * 64, 1, "m-1"), install_id="i1")
    store.write_pointer(pointer)
    assert store.pointer() == pointer and store.inactive_slot() == "b"
    with pytest.raises(RuntimeError):
        store.clear_slot("a")
    journal = Journal("i2", "b", "verify", steps_done=["stage"])
    store.write_journal(journal)
    assert store.journal() == journal
    store.clear_journal()
    assert store.journal() is None
    store.journal_path.write_text("{not json")
    assert store.journal() is None and not store.journal_path.exists()


def test_settings_from_env() -> None:
    env = {
        "FLEETCAST_AGENT_STATE_DIR": "/var/lib/fleetcast",
        "FLEETCAST_AGENT_PUBLIC_KEY": "/etc/fleetcast.pub",
        "FLEETCAST_AGENT_DEVICE_ID": "dev-9",
        "FLEETCAST_AGENT_CAPTURE_RATE": "0.25",
        "FLEETCAST_AGENT_GRPC_WORKERS": "4",
    }
    settings = Settings.from_env(env, listen="127.0.0.1:0")
    assert settings.state_dir == Path("/var/lib/fleetcast")
    assert (settings.capture_rate, settings.grpc_workers) == (0.25, 4)
    assert settings.listen_address == "127.0.0.1:0"
    assert Settings.from_env(env).listen_address == "unix:/var/lib/fleetcast/agent.sock"
    assert settings.crash_at is None


def test_settings_name_what_is_missing_or_malformed() -> None:
    with pytest.raises(SettingsError, match="FLEETCAST_AGENT_DEVICE_ID"):
        Settings.from_env({"FLEETCAST_AGENT_STATE_DIR": "/s", "FLEETCAST_AGENT_PUBLIC_KEY": "/k"})
    with pytest.raises(SettingsError, match="FLEETCAST_AGENT_THREADS"):
        Settings.from_env({"FLEETCAST_AGENT_THREADS": "many"}, state_dir="/s")
