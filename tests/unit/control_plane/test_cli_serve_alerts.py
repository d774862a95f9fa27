"""`fleetcast serve`'s alert, SMTP and retention options: bad combinations are refused before
anything starts, each naming the problem."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from control_plane.cli import cli
from control_plane.settings import Settings


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--alert-email", "ops@example.org"], "alert e-mails need an SMTP server"),
        (["--alert-email", "ops", "--smtp", "127.0.0.1:25"], "alert e-mail 'ops'"),
        (["--alert-webhook", "ftp://hooks"], "expected an http(s) URL"),
        (["--smtp", "nohost"], "expected HOST:PORT"),
        (["--alert-interval", "soon"], "expected a duration"),
        (["--retention-full", "7d", "--retention-keep", "1d"], "is shorter than the full"),
        (["--retention-bucket", "0"], "must be > 0 seconds"),
        (["--retention-uploads", "a week"], "expected a duration"),
        (["--retention-captures", "-1d"], "--retention-captures"),
    ],
)
def test_bad_alert_and_retention_options_are_refused_by_name(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = CliRunner().invoke(
        cli, ["serve", "--http", "off", *args], obj=Settings(data_dir=tmp_path / "d")
    )
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "d" / "store.db").exists()  # refused before anything started
