"""Who goes in which wave, and which package each device gets (pure, deterministic).

Devices are ranked by ``sha256(rollout id, device id)``: the order depends on
neither the order the store lists them in nor on who else is in the target,
so a restart or a device joining or leaving never moves another device to a
different wave, and two rollouts do not always pick the same canaries.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence

from control_plane.core.rollout_spec import RolloutBlocked, WaveSpec

NO_PROFILE = "(no profile)"


def device_rank(rollout_id: str, device_id: str) -> str:
    """The device's place in this rollout's order (a hex digest; smaller goes first)."""
    return hashlib.sha256(f"{rollout_id}\0{device_id}".encode()).hexdigest()


def wave_sizes(waves: Sequence[WaveSpec], total: int) -> list[int]:
    """How many of ``total`` devices each wave takes; the last takes the rest.

    A percentage rounds up (a 1% canary of 50 devices is one device, not none).
    """
    sizes: list[int] = []
    remaining = total
    for i, wave in enumerate(waves):
        if i == len(waves) - 1:
            size = remaining
        elif wave.count is not None:
            size = min(wave.count, remaining)
        else:
            size = min(math.ceil((wave.percent or 0.0) * total / 100 - 1e-9), remaining)
        sizes.append(size)
        remaining -= size
    return sizes


def assign_waves(
    rollout_id: str, waves: Sequence[WaveSpec], device_ids: Sequence[str]
) -> dict[str, int]:
    """Wave index per device: rank the devices, cut the ranking by :func:`wave_sizes`."""
    ranked = sorted(set(device_ids), key=lambda d: (device_rank(rollout_id, d), d))
    assignment: dict[str, int] = {}
    start = 0
    for index, size in enumerate(wave_sizes(waves, len(ranked))):
        for device_id in ranked[start : start + size]:
            assignment[device_id] = index
        start += size
    return assignment


def packages_for(profiles: Mapping[str, str | None], packages: Mapping[str, str]) -> dict[str, str]:
    """The package (sha256) per device, chosen by its profile.

    ``profiles`` maps device id to profile id; ``packages`` maps profile id to
    the package built for it. Raises RolloutBlocked naming every profile
    without a package (and how many devices have it).
    """
    missing: dict[str, int] = {}
    chosen: dict[str, str] = {}
    for device_id, profile in profiles.items():
        package = packages.get(profile) if profile is not None else None
        if package is None:
            key = profile if profile is not None else NO_PROFILE
            missing[key] = missing.get(key, 0) + 1
        else:
            chosen[device_id] = package
    if missing:
        named = ", ".join(
            f"{p} ({n} device{'s' if n > 1 else ''})" for p, n in sorted(missing.items())
        )
        raise RolloutBlocked(f"no package for profile {named}", sorted(missing))
    return chosen
