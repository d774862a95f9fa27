"""``fleetcast rollouts``: option parsing and the per-wave bars (the API is tested elsewhere)."""

from __future__ import annotations

import click
import pytest

from control_plane.cli_rollouts import _selector, _waves, render


def test_waves_and_selector_options() -> None:
    assert _waves("1, 20%,100%") == [{"count": 1}, {"percent": 20}, {"percent": 100}]
    assert _selector("site=lab, tier=edge") == {"site": "lab", "tier": "edge"}
    assert _selector(None) == {}
    with pytest.raises(click.BadParameter, match="'x%'"):
        _waves("1,x%")
    with pytest.raises(click.BadParameter, match="key=value"):
        _selector("site")


def test_render_draws_one_bar_per_wave_with_counts_and_gates() -> None:
    counts = {"queued": 0, "installing": 1, "succeeded": 2, "failed": 1, "timed_out": 0}
    view = {
        "summary": {
            "waves": [
                {
                    "index": 0,
                    "status": "deploying",
                    "devices": {**counts, "skipped": 0, "left": 0, "rolled_back": 0},
                    "gates": {"install": "pending"},
                },
                {"index": 1, "status": "pending", "devices": {}, "gates": {}},
            ]
        }
    }
    first, second = render(view).splitlines()
    assert "wave 0 deploying" in first and "2/4" in first and "installing 1, failed 1" in first
    assert first.count("█") == 15 and first.count("✗") == 8 and "install=pending" in first
    assert "0/0" in second and "gates: -" in second
