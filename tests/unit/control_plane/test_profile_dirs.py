"""Where hardware profiles load from: the built-ins, then the user's directory on top."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from control_plane import __version__
from control_plane.cli import cli
from control_plane.core.hardware import builtin_profiles_dir, load_profiles, select_profiles
from control_plane.errors import NotFound
from control_plane.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
PI5 = (ROOT / "hardware-profiles" / "raspberry-pi-5.toml").read_text()


def test_builtins_in_a_checkout_are_the_top_level_directory() -> None:
    assert builtin_profiles_dir() == ROOT / "hardware-profiles"


def test_user_dir_adds_and_overrides_by_id(tmp_path: Path) -> None:
    (tmp_path / "my-board.toml").write_text(PI5.replace('id = "raspberry-pi-5"', 'id = "my-board"'))
    (tmp_path / "raspberry-pi-5.toml").write_text(_with_description(PI5, "my own Pi 5"))
    builtin = load_profiles(builtin_profiles_dir())
    merged = load_profiles([builtin_profiles_dir(), tmp_path])
    assert set(merged) == set(builtin) | {"my-board"}
    assert merged["raspberry-pi-5"].description == "my own Pi 5"
    assert merged["jetson-orin"] == builtin["jetson-orin"]
    assert [p.id for p in select_profiles([builtin_profiles_dir(), tmp_path], ["my-board"])] == [
        "my-board"
    ]


def _with_description(text: str, description: str) -> str:
    lines = [
        f'description = "{description}"' if line.startswith("description") else line
        for line in text.splitlines()
    ]
    return "\n".join(lines) + "\n"


def test_missing_user_dir_is_named(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="nowhere"):
        load_profiles([builtin_profiles_dir(), tmp_path / "nowhere"])


def test_empty_directories_say_where_they_looked(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match=f"no hardware profiles .* in {tmp_path}"):
        load_profiles(tmp_path)


def test_settings_read_fleetcast_profiles_dir(tmp_path: Path) -> None:
    settings = Settings.from_env({"FLEETCAST_PROFILES_DIR": str(tmp_path)})
    assert settings.profile_dirs() == [builtin_profiles_dir(), tmp_path]
    assert settings.profile_dirs(tmp_path / "flag") == [builtin_profiles_dir(), tmp_path / "flag"]
    assert Settings.from_env({}).profile_dirs() == [builtin_profiles_dir()]


def test_profiles_list_shows_builtins_and_user_overrides(tmp_path: Path) -> None:
    (tmp_path / "raspberry-pi-5.toml").write_text(_with_description(PI5, "mine"))
    runner = CliRunner()
    plain = runner.invoke(cli, ["profiles", "list"], obj=Settings(data_dir=tmp_path / "d"))
    assert plain.exit_code == 0, plain.output
    ids = {line.split()[0] for line in plain.output.splitlines()}
    assert ids == set(load_profiles(builtin_profiles_dir()))
    assert "(from" not in plain.output
    mine = runner.invoke(cli, ["profiles", "list", "--profiles-dir", str(tmp_path)], obj=Settings())
    assert mine.exit_code == 0, mine.output
    (line,) = [row for row in mine.output.splitlines() if row.startswith("raspberry-pi-5 ")]
    assert line.endswith(f"(from {tmp_path / 'raspberry-pi-5.toml'})")


def test_version_option() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"fleetcast, version {__version__}"
