"""`fleetcast alert-rules list|set|delete` against a served control plane (waitress on a free
loopback port): roles, audit, errors naming the field, and the served evaluation's rules."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from control_plane.api.client import ApiClient
from control_plane.cli import cli
from control_plane.server import ControlPlane, ServeOptions
from control_plane.services.tokens import bootstrap_admin

pytestmark = pytest.mark.integration


@pytest.fixture()
def served(tmp_path: Path, keys: Any) -> Iterator[ControlPlane]:
    plane = ControlPlane(
        ServeOptions(
            data_dir=tmp_path / "cp",
            public_key=keys.public,
            grpc_address="127.0.0.1:0",
            http_address="127.0.0.1:0",
            alert_interval_s=0,
        )
    ).start()
    try:
        yield plane
    finally:
        plane.stop()


def test_list_set_delete_through_the_cli(served: ControlPlane, tmp_path: Path) -> None:
    assert served.services is not None and served.http_port
    repos = served.services.repos
    _, admin = bootstrap_admin(repos)
    url = f"http://127.0.0.1:{served.http_port}"
    client = ApiClient(url, admin)
    client.request("POST", "/api/v1/models", body={"name": "digits", "owner": "ml"})
    secrets = {
        role: client.request("POST", "/api/v1/tokens", body={"name": f"{role}-cli", "role": role})[
            "token"
        ]
        for role in ("viewer", "operator")
    }

    def run(who: str, *argv: str) -> Result:
        env = {"FLEETCAST_SERVER": url, "FLEETCAST_TOKEN": secrets[who],
               "XDG_CONFIG_HOME": str(tmp_path / "config"), "COLUMNS": "200"}  # fmt: skip
        return CliRunner().invoke(cli, ["alert-rules", *argv], env=env)

    def ok(who: str, *argv: str) -> list[dict[str, Any]]:
        done = run(who, *argv, "--json")
        assert done.exit_code == 0, done.output
        return [json.loads(line) for line in done.stdout.splitlines()]

    defaults = ok("viewer", "list", "digits")
    assert {r["name"]: r["source"] for r in defaults}["error_rate"] == "default"

    (lower,) = ok("operator", "set", "digits", "error_rate", "--threshold", "0.02", "--for", "0")
    assert (lower["threshold"], lower["for_s"], lower["severity"], lower["source"]) == (
        0.02,
        0.0,
        "critical",
        "stored",
    )
    (floor,) = ok("operator", "set", "digits", "accuracy_floor", "--metric", "accuracy",
                  "--threshold", "0.9", "--comparison", "<", "--severity", "warning",
                  "--gates-rollout", "--no-retrain")  # fmt: skip
    assert (floor["comparison"], floor["gates_rollout"], floor["retrain"]) == ("<", True, False)
    (off,) = ok("operator", "set", "digits", "silent_devices", "--disable")
    assert off["enabled"] is False and off["threshold"] == 0.1

    table = run("viewer", "list", "digits")
    assert table.exit_code == 0, table.output
    rows = {line.split("│")[1].strip(): line for line in table.stdout.splitlines() if "│" in line}
    assert "error_rate > 0.02" in rows["error_rate"] and "override" in rows["error_rate"]
    assert "accuracy < 0.9" in rows["accuracy_floor"] and "added" in rows["accuracy_floor"]
    assert "gate" in rows["accuracy_floor"] and " no " in rows["silent_devices"]
    assert "default" in rows["feature_drift"]
    # the served evaluation uses them
    assert served.alerts is not None
    active = {r.name: r for r in served.alerts.rules.active("digits")}
    assert active["error_rate"].threshold == 0.02 and "accuracy_floor" in active
    assert "silent_devices" not in active

    # a viewer cannot change rules; bad input is refused naming the field
    refused = run("viewer", "set", "digits", "error_rate", "--threshold", "0.5")
    assert refused.exit_code != 0 and "needs the operator role" in refused.output
    missing = run("operator", "set", "digits", "new_rule", "--threshold", "0.5")
    assert missing.exit_code != 0 and "metric is required" in missing.output
    nan = run("operator", "set", "digits", "new_rule", "--metric", "accuracy", "--threshold", "nan")
    assert nan.exit_code != 0 and "threshold" in nan.output
    window = run("operator", "set", "digits", "error_rate", "--window", "-1")
    assert window.exit_code != 0 and "window_s" in window.output
    assert "new_rule" not in {r["name"] for r in ok("viewer", "list", "digits")}

    deleted = run("operator", "delete", "digits", "error_rate")
    assert deleted.exit_code == 0, deleted.output
    assert "the default applies: error_rate > 0.05" in deleted.stdout
    gone = run("operator", "delete", "digits", "accuracy_floor")
    assert "no rule of this name now" in gone.stdout
    again = run("operator", "delete", "digits", "accuracy_floor")
    assert again.exit_code != 0 and "no stored alert rule 'accuracy_floor'" in again.output

    audit = client.request("GET", "/api/v1/audit", query={"limit": 50})["items"]
    changes = [
        (e["actor"], e["action"], e["subject"]) for e in audit if "alert_rule" in e["action"]
    ]
    assert changes == [
        ("operator-cli", "alert_rule.delete", "alert-rule:digits/accuracy_floor"),
        ("operator-cli", "alert_rule.delete", "alert-rule:digits/error_rate"),
        ("operator-cli", "alert_rule.set", "alert-rule:digits/silent_devices"),
        ("operator-cli", "alert_rule.set", "alert-rule:digits/accuracy_floor"),
        ("operator-cli", "alert_rule.set", "alert-rule:digits/error_rate"),
    ]
