"""What a device runs, from its own status reports (pure).

The agent reports every change of its active slot: ``installed`` (a deploy or a
local install) and ``rolled_back`` (a rollback command, its own health watch, or
an active slot that failed verification at start). Ingest folds them into the
device record's ``slots`` — per model, the package it runs now and the event that
put it there — and the rollouts read it: a device already running a rollout's
package is not deployed again, a rollback names the package it returns to, and a
health-watch rollback of a rollout's package counts as that device's failure.

Reports can arrive out of order (resends, two transports); the one with the
highest sequence number wins, so folding the same reports again changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

SLOT_EVENTS = frozenset({"installed", "rolled_back"})
_KEPT = (
    "package_id",
    "model_version",
    "sha256",
    "release",
    "event",
    "cause",
    "reason",
    "from_package_id",
    "from_sha256",
    "at",
    "sequence",
)


def fold_status(
    slots: Mapping[str, Any], reports: Iterable[Mapping[str, Any]]
) -> dict[str, Any] | None:
    """``slots`` updated by the slot-changing ``reports``; None when nothing changes."""
    out = {name: dict(entry) for name, entry in slots.items() if isinstance(entry, Mapping)}
    changed = False
    for report in reports:
        name = report.get("model_name")
        if report.get("event") not in SLOT_EVENTS or not isinstance(name, str) or not name:
            continue
        sequence = report.get("sequence")
        if not isinstance(sequence, int):
            continue
        known = out.get(name, {}).get("sequence")
        if isinstance(known, int) and known >= sequence:
            continue  # an older report (or the same one again)
        out[name] = {k: report.get(k) for k in _KEPT if report.get(k) is not None}
        changed = True
    return out if changed else None


def running_package(slots: Mapping[str, Any], model: str) -> str | None:
    """The sha256 of the package ``model`` runs on the device, if it said so."""
    entry = slots.get(model)
    sha = entry.get("sha256") if isinstance(entry, Mapping) else None
    return sha if isinstance(sha, str) and sha else None


def self_rollback(
    slots: Mapping[str, Any], model: str, package: str, since: float | None = None
) -> str | None:
    """The reason, when the device's last report says its own health watch rolled ``package``
    back (a rollback the control plane commanded is not one), at or after ``since`` (the
    deploy: an older report of the same package, from an earlier rollout, is not this one;
    the device's clock stamps the report)."""
    entry = slots.get(model)
    if not isinstance(entry, Mapping) or entry.get("event") != "rolled_back":
        return None
    if entry.get("cause") != "health" or entry.get("from_sha256") != package:
        return None
    at = entry.get("at")
    if since is not None and isinstance(at, int | float) and at < since:
        return None
    return str(entry.get("reason") or "health watch breached")
