"""Ingest: telemetry windows and status reports, stored exactly once per (device, seq).

Both transports hand the items of one upload to :meth:`IngestService.ingest`.
Over the device's quota the whole upload is refused (ResourceExhausted, nothing
stored, the refusal counted for operators) and the device sends it again later;
a malformed item is rejected by itself, with the reason, and logged.
"""

from __future__ import annotations

import builtins
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from control_plane.errors import ResourceExhausted
from control_plane.quotas import MAX_UPLOAD_BYTES, IngestQuota, QuotaLimits
from control_plane.services import Clock
from control_plane.services.devices import DeviceService
from control_plane.store.records import DEFAULT_LIMIT, NewUpload, Page, Upload
from control_plane.store.repos import Repositories

logger = logging.getLogger(__name__)

UPLOAD_KINDS = frozenset({"telemetry_window", "status"})


@dataclass(frozen=True)
class UploadResult:
    acked: builtins.list[int]  # stored now or before (a resend is acked again, stored once)
    rejected: builtins.list[int]
    errors: builtins.list[str]


class IngestService:
    def __init__(
        self,
        repos: Repositories,
        devices: DeviceService,
        clock: Clock = time.time,
        quota: QuotaLimits | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.repos = repos
        self.devices = devices
        self.clock = clock
        self.quota = IngestQuota(quota or QuotaLimits(), monotonic)

    def ingest(
        self, device_id: str, items: Iterable[tuple[int, str, str]], transport: str
    ) -> UploadResult:
        """Store uploads once per (device id, seq); malformed ones are rejected and logged.

        Raises ResourceExhausted, storing nothing, when the device is over its
        byte or rate quota; the refusal is counted for operators.
        """
        items = list(items)
        refusal = self.quota.take(device_id, sum(len(i[2]) for i in items), len(items))
        if refusal is not None:
            self.devices.note_refused(device_id)
            logger.warning("upload from %s over %s refused: %s", device_id, transport, refusal)
            raise ResourceExhausted(refusal)
        acked: builtins.list[int] = []
        rejected: builtins.list[int] = []
        errors: builtins.list[str] = []
        new: builtins.list[NewUpload] = []
        for seq, kind, body_json in items:
            problem = check_upload(device_id, seq, kind, body_json)
            if problem:
                logger.warning("upload from %s seq %s rejected: %s", device_id, seq, problem)
                rejected.append(seq)
                errors.append(problem)
                continue
            new.append(NewUpload(seq, kind, body_json))
            acked.append(seq)
        if new:
            self.repos.uploads.add(device_id, new, transport, self.clock())
        return UploadResult(acked, rejected, errors)

    def list(
        self,
        *,
        device_id: str | None = None,
        kind: str | None = None,
        since: float | None = None,
        limit: int = DEFAULT_LIMIT,
        offset: int = 0,
    ) -> Page[Upload]:
        return self.repos.uploads.list(
            device_id=device_id, kind=kind, since=since, limit=limit, offset=offset
        )

    def all(self, device_id: str | None = None, kind: str | None = None) -> builtins.list[Upload]:
        """Every page of :meth:`list` (tests and the demo; the API pages)."""
        found: builtins.list[Upload] = []
        offset: int | None = 0
        while offset is not None:
            page = self.list(device_id=device_id, kind=kind, limit=1000, offset=offset)
            found += page.items
            offset = page.next_offset
        return found


def check_upload(device_id: str, seq: int, kind: str, body_json: str) -> str | None:
    """Why an upload item is malformed, or None."""
    if kind not in UPLOAD_KINDS:
        return f"unknown upload kind {kind!r}"
    if seq < 1:
        return f"sequence {seq} is not positive"
    if len(body_json) > MAX_UPLOAD_BYTES:
        return f"body of {len(body_json)} bytes exceeds {MAX_UPLOAD_BYTES}"
    try:
        body = json.loads(body_json)
    except ValueError as exc:
        return f"body is not JSON: {exc}"
    if not isinstance(body, dict):
        return "body is not a JSON object"
    if body.get("device_id") != device_id:
        return f"body names device {body.get('device_id')!r}, not the sender {device_id!r}"
    if body.get("sequence") != seq:
        return f"body sequence {body.get('sequence')!r} != envelope sequence {seq}"
    return None
