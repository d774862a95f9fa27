"""``next_deadline``: when time alone moves a rollout (what the ticker sleeps until at most)."""

from __future__ import annotations

from control_plane.core.rollout import next_deadline, start_rollout, step
from control_plane.core.rollout_model import Abort, DeviceInstalled, Rollout, TargetDevice
from control_plane.core.rollout_spec import parse_spec

NOW = 1_700_000_000.0


def _started() -> Rollout:
    spec = parse_spec(
        {
            "model": "digits",
            "version": "2",
            "target": {"kind": "devices", "selector": {"site": "lab"}},
            "waves": [{"count": 1}, {"percent": 100}],
            "bake_s": 30,
            "device_timeout_s": 120,
            "min_finished": 1,
            "gates": {
                "error_rate": {"enabled": False},
                "latency": {"enabled": False},
                "pending_deadline_s": 600,
            },
        }
    )
    devices = [TargetDevice(f"d{i}", "x86", {"site": "lab"}) for i in range(4)]
    rollout, _ = start_rollout("r", spec, devices, {"x86": "sha"}, NOW)
    return rollout


def test_a_deploying_wave_waits_for_its_devices_timeout() -> None:
    rollout = _started()
    assert next_deadline(rollout, NOW) == NOW + 120
    assert next_deadline(rollout, NOW + 121) is None  # past deadlines are not deadlines


def test_a_baking_wave_waits_for_its_bake_then_its_gates_deadline() -> None:
    rollout = _started()
    canary = next(d for d, s in rollout.devices.items() if s.status == "installing")
    baking, _ = step(rollout, DeviceInstalled(canary), NOW + 5)
    assert baking.waves[0].status == "baking"
    assert next_deadline(baking, NOW + 5) == NOW + 35
    assert next_deadline(baking, NOW + 36) == NOW + 35 + 600


def test_an_aborted_rollout_has_none() -> None:
    aborted, _ = step(_started(), Abort("op", "stop"), NOW)
    assert next_deadline(aborted, NOW) is None
