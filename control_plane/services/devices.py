"""Devices: credentials, listing and labels, reports, revocation, batched activity."""

from __future__ import annotations

import builtins
import dataclasses
import hmac
import threading
import time
from collections.abc import Mapping
from typing import Any

from control_plane.enrollment import token_hash
from control_plane.errors import Unauthenticated
from control_plane.services import Clock
from control_plane.store.records import DEFAULT_LIMIT, Device, Page
from control_plane.store.repos import Repositories


def device_summary(device: Device) -> dict[str, Any]:
    """What operators see of a device (never its credential hash)."""
    row = dataclasses.asdict(device)
    del row["token_hash"], row["next_version"]
    return row


class DeviceService:
    """Devices over the repositories; last-seen times and quota refusals are batched.

    Every authenticated call notes the device as seen; writing that on each call
    would make every read a write, so :meth:`touch` and :meth:`note_refused`
    gather in memory and :meth:`flush_activity` writes them in one transaction
    (``fleetcast serve`` does every few seconds). Lists merge what is not written yet.
    """

    def __init__(self, repos: Repositories, clock: Clock = time.time) -> None:
        self.repos = repos
        self.clock = clock
        self._seen: dict[str, float] = {}
        self._refused: dict[str, int] = {}
        self._lock = threading.Lock()

    # -- credentials

    def authenticate(self, device_token: str) -> str:
        """The device id a credential belongs to; Unauthenticated if unknown or revoked."""
        device_id, _, secret = device_token.partition(".")
        if not device_id or not secret:
            raise Unauthenticated("malformed device credential")
        device = self.repos.devices.find(device_id)
        if device is None or not hmac.compare_digest(device.token_hash, token_hash(secret)):
            raise Unauthenticated("unknown device credential")
        if device.status != "active":
            raise Unauthenticated(f"device {device_id!r} is revoked")
        return device_id

    def is_active(self, device_id: str) -> bool:
        device = self.repos.devices.find(device_id)
        return device is not None and device.status == "active"

    # -- reading

    def get(self, device_id: str) -> Device:
        return self._merged([self.repos.devices.get(device_id)])[0]

    def list(
        self,
        *,
        status: str | None = None,
        profile_id: str | None = None,
        labels: Mapping[str, str] | None = None,
        limit: int = DEFAULT_LIMIT,
        offset: int = 0,
    ) -> Page[Device]:
        page = self.repos.devices.list(
            status=status, profile_id=profile_id, labels=labels, limit=limit, offset=offset
        )
        return Page(self._merged(page.items), page.next_offset)

    def revoked_ids(self) -> builtins.list[str]:
        return self.repos.devices.revoked_ids()

    def _merged(self, devices: builtins.list[Device]) -> builtins.list[Device]:
        with self._lock:
            return [
                dataclasses.replace(
                    d,
                    last_seen=max(self._seen.get(d.id, 0.0), d.last_seen or 0.0) or None,
                    uploads_refused=d.uploads_refused + self._refused.get(d.id, 0),
                )
                for d in devices
            ]

    # -- changes

    def set_labels(self, device_id: str, labels: Mapping[str, str], actor: str) -> Device:
        before = self.repos.devices.get(device_id)
        after = self.repos.devices.set_labels(device_id, labels)
        self.repos.audit.add(
            actor,
            "device.labels",
            device_id,
            self.clock(),
            before={"labels": before.labels},
            after={"labels": after.labels},
        )
        return after

    def set_profile(self, device_id: str, profile_id: str, actor: str) -> Device:
        """An operator names the device's hardware profile (deployments pick packages by it)."""
        before = self.repos.devices.get(device_id)
        after = self.repos.devices.report(device_id, profile_id=profile_id)
        self.repos.audit.add(
            actor,
            "device.profile",
            device_id,
            self.clock(),
            before={"profile_id": before.profile_id},
            after={"profile_id": after.profile_id},
        )
        return after

    def report(
        self,
        device_id: str,
        *,
        agent_version: str | None = None,
        profile_id: str | None = None,
        slots: Mapping[str, Any] | None = None,
    ) -> Device:
        """What a device says of itself (agent version, profile, slots)."""
        return self.repos.devices.report(
            device_id, agent_version=agent_version, profile_id=profile_id, slots=slots
        )

    def revoke(self, device_id: str, actor: str) -> Device:
        """Revoke a device; the transports cut it off when the change notifier says so."""
        before = self.repos.devices.get(device_id)
        after = self.repos.devices.revoke(device_id, self.clock())
        self.repos.audit.add(
            actor,
            "device.revoke",
            device_id,
            self.clock(),
            before={"status": before.status},
            after={"status": after.status, "revoked_at": after.revoked_at},
        )
        return after

    # -- activity (batched)

    def touch(self, device_id: str) -> None:
        """Note that a device was seen; written by :meth:`flush_activity`."""
        with self._lock:
            self._seen[device_id] = self.clock()

    def note_refused(self, device_id: str) -> None:
        """Count an upload refused over the device's quota; written by :meth:`flush_activity`."""
        with self._lock:
            self._refused[device_id] = self._refused.get(device_id, 0) + 1

    def flush_activity(self) -> None:
        """Write the last-seen times and refusals gathered since the last flush (kept on error)."""
        with self._lock:
            seen, self._seen = self._seen, {}
            refused, self._refused = self._refused, {}
        if not seen and not refused:
            return
        try:
            self.repos.devices.record_activity(seen, refused)
        except Exception:
            with self._lock:  # keep them for the next flush
                for device_id, at in seen.items():
                    self._seen[device_id] = max(at, self._seen.get(device_id, 0.0))
                for device_id, count in refused.items():
                    self._refused[device_id] = self._refused.get(device_id, 0) + count
            raise
