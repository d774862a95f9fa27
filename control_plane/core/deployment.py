"""Which package each device gets when a version is deployed (pure, no I/O).

A version deploys as a whole or not at all: every target device needs a
package of the version for its hardware profile, and the refusal names the
profiles that have none (compile for them first) and the devices that have not
reported a profile yet.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from control_plane.core.lifecycle import DEPLOYABLE, is_deployable
from control_plane.errors import Conflict, InvalidInput


@dataclass(frozen=True)
class Target:
    device_id: str
    profile_id: str | None


def plan_deployment(
    model: str,
    version: str,
    stage: str,
    targets: Sequence[Target],
    packages: Mapping[str, str],
) -> dict[str, str]:
    """device id -> package sha256, given the packages of the version by profile id."""
    if not is_deployable(stage):
        raise Conflict(
            f"{model} {version} is {stage}: only {', '.join(sorted(DEPLOYABLE))} versions deploy"
        )
    if not targets:
        raise InvalidInput("no active device matches: nothing to deploy to")
    unknown = sorted(t.device_id for t in targets if t.profile_id is None)
    if unknown:
        raise Conflict(
            f"device(s) {', '.join(unknown[:10])} have not reported a hardware profile yet"
        )
    needed: dict[str, list[str]] = {}
    for target in targets:
        assert target.profile_id is not None
        needed.setdefault(target.profile_id, []).append(target.device_id)
    missing = sorted(p for p in needed if p not in packages)
    if missing:
        which = "; ".join(f"{p} (devices {', '.join(sorted(needed[p])[:5])})" for p in missing)
        raise Conflict(
            f"{model} {version} has no package for profile(s) {which}: compile it for them first"
        )
    return {t.device_id: packages[t.profile_id] for t in targets if t.profile_id is not None}
