"""Ingest: telemetry windows and status reports, stored exactly once per (device, seq).

Captured samples (a window's ``captures``: inputs and outputs of sampled
predictions) are never stored in clear: the captures table seals them
(``store/sql/monitoring.py``) and the raw upload kept beside the index has them
taken out (:func:`redact_captures`).

Both transports hand the items of one upload to :meth:`IngestService.ingest`.
Over the device's quota the whole upload is refused (ResourceExhausted, nothing
stored, the refusal counted for operators) and the device sends it again later;
a malformed item is rejected by itself, with the reason, and logged.
"""

from __future__ import annotations

import builtins
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from control_plane.core.running import SLOT_EVENTS, fold_status
from control_plane.errors import ControlPlaneError, ResourceExhausted
from control_plane.quotas import MAX_UPLOAD_BYTES, IngestQuota, QuotaLimits
from control_plane.services import Clock
from control_plane.services.devices import DeviceService
from control_plane.store.records import (
    DEFAULT_LIMIT,
    NewCapture,
    NewUpload,
    NewWindow,
    Page,
    Upload,
    UploadBatch,
)
from control_plane.store.repos import Repositories
from edge_agent.core.windows import StatusEvent, TelemetryWindow

logger = logging.getLogger(__name__)

UPLOAD_KINDS = frozenset({"telemetry_window", "status"})
BUCKET_S = 3600.0  # windows are indexed by the hour they started in


class _Job:
    """One caller's upload waiting in a group commit."""

    def __init__(self, batch: UploadBatch) -> None:
        self.batch = batch
        self.stored: builtins.list[int] | None = None
        self.error: BaseException | None = None
        self.done = False
        # released when stored (or failed), or to become the writer: a bare lock, held from
        # the start, is the cheapest one-shot wake-up (an Event runs a Condition in Python)
        self._wake = threading.Lock()
        self._wake.acquire()

    def wait(self) -> None:
        self._wake.acquire()

    def wake(self) -> None:
        """Only the writer calls it (one at a time); a second call is a no-op."""
        if self._wake.locked():
            self._wake.release()


class GroupCommit:
    """Concurrent uploads stored in one transaction (a group commit), each caller answered
    only after the transaction holding its upload committed (so an ack still follows the
    commit: exactly-once holds, the device resends whatever was not acked).

    No extra thread: a caller announces itself (:meth:`arrive`) before decoding and queues
    its upload (:meth:`store`). The first caller to queue while nobody writes becomes the
    writer: it waits at most ``linger_s`` for the callers still decoding to queue theirs
    (never when it is alone: a single sender pays no delay), stores up to ``max_batch``
    queued uploads in one transaction, wakes their callers, and hands the writer's role to
    the oldest upload still queued. When a group's transaction fails, each of its uploads
    is retried in a transaction of its own, so one bad upload fails only its own caller.
    """

    def __init__(
        self,
        write: Callable[[Sequence[UploadBatch]], builtins.list[builtins.list[int]]],
        max_batch: int = 64,
        linger_s: float = 0.002,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"group commit max_batch {max_batch}: expected >= 1")
        self.write = write
        self.max_batch = max_batch
        self.linger_s = linger_s
        self._cv = threading.Condition()  # guards the fields below; the writer waits on it
        self._queue: builtins.list[_Job] = []
        self._decoding = 0  # callers that arrived and have not queued (or left) yet
        self._writing = False  # a caller holds the writer's role
        self._lingering = False  # the writer waits on the condition for callers decoding
        self.commits = 0  # transactions written (for tests and the benchmark)
        self.uploads = 0

    def arrive(self) -> None:
        """A caller starts decoding an upload: the writer may wait (``linger_s``) for it."""
        with self._cv:
            self._decoding += 1

    def leave(self) -> None:
        """A caller that arrived has nothing to store (every item rejected)."""
        with self._cv:
            self._decoding -= 1
            self._wake_writer()

    def _wake_writer(self) -> None:
        """Wake the lingering writer once it has nothing left to wait for (not at every
        upload queued: each wake-up costs a thread switch and the GIL)."""
        if self._lingering and (self._decoding <= 0 or len(self._queue) >= self.max_batch):
            self._cv.notify()

    def queued(self) -> int:
        """Uploads waiting for the next transaction."""
        with self._cv:
            return len(self._queue)

    def store(self, batch: UploadBatch) -> builtins.list[int]:
        """Store one upload of a caller that arrived (with whatever else is queued); its
        sequence numbers new to the store, once its transaction committed."""
        job = _Job(batch)
        with self._cv:
            self._decoding -= 1
            self._queue.append(job)
            writer = not self._writing
            self._writing = True
            self._wake_writer()  # the writer may wait for this upload
        if not writer:
            job.wait()  # stored by a writer, or handed the writer's role
        if not job.done:
            try:
                while not job.done:
                    self._round()
            finally:
                self._hand_off()
        if job.error is not None:
            raise job.error
        assert job.stored is not None
        return job.stored

    def _round(self) -> None:
        """As the writer: linger for callers still decoding, then commit one group."""
        with self._cv:
            deadline = time.monotonic() + self.linger_s
            self._lingering = True
            while self._decoding > 0 and len(self._queue) < self.max_batch:
                left = deadline - time.monotonic()
                if left <= 0 or not self._cv.wait(left):
                    break
            self._lingering = False
            group = self._queue[: self.max_batch]
            del self._queue[: len(group)]
        try:
            self._commit(group)
        finally:
            for j in group:
                j.done = True
                j.wake()

    def _hand_off(self) -> None:
        with self._cv:
            if self._queue:
                self._queue[0].wake()  # not done: it becomes the writer
            else:
                self._writing = False

    def _commit(self, group: Sequence[_Job]) -> None:
        if not group:
            return
        try:
            answers = self.write([j.batch for j in group])
        except BaseException as exc:
            if not isinstance(exc, Exception):  # interrupted: nobody waits forever
                for job in group:
                    job.error, job.done = exc, True
                raise
            if len(group) == 1:
                group[0].error, group[0].done = exc, True
                return
            logger.warning("group commit of %d uploads failed (%s); one by one", len(group), exc)
            for job in group:
                self._commit([job])
            return
        self.commits += 1
        self.uploads += len(group)
        for job, stored in zip(group, answers, strict=True):
            job.stored, job.done = stored, True


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
        group_commit: int = 64,
    ) -> None:
        self.repos = repos
        self.devices = devices
        self.clock = clock
        self.quota = IngestQuota(quota or QuotaLimits(), monotonic)
        # concurrent uploads (transport threads) share a transaction, up to this many
        self.group = GroupCommit(lambda b: repos.uploads.add_group(b, self.clock()), group_commit)

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
        self.group.arrive()
        try:
            acked, rejected, errors, new, windows = self._decode(device_id, items)
        except BaseException:
            self.group.leave()
            raise
        if not new:
            self.group.leave()
            return UploadResult(acked, rejected, errors)
        self.group.store(UploadBatch(device_id, new, transport, windows))
        self._note_slots(device_id, new)
        return UploadResult(acked, rejected, errors)

    def _decode(self, device_id: str, items: builtins.list[tuple[int, str, str]]) -> tuple[
        builtins.list[int], builtins.list[int], builtins.list[str],
        builtins.list[NewUpload], dict[int, NewWindow],
    ]:  # fmt: skip
        """(acked, rejected, errors, uploads to store, windows by seq)."""
        acked: builtins.list[int] = []
        rejected: builtins.list[int] = []
        errors: builtins.list[str] = []
        new: builtins.list[NewUpload] = []
        windows: dict[int, NewWindow] = {}
        for seq, kind, body_json in items:
            window = fast_window(device_id, seq, body_json) if kind == "telemetry_window" else None
            problem = None
            if window is None:
                problem = check_upload(device_id, seq, kind, body_json)
                if problem is None:
                    window, problem = decode_upload(kind, body_json)
            if problem:
                logger.warning("upload from %s seq %s rejected: %s", device_id, seq, problem)
                rejected.append(seq)
                errors.append(f"sequence {seq}: {problem}")
                continue
            # only a window with captures is re-encoded (their samples taken out)
            raw = redact_captures(body_json) if window and window.captures else body_json
            new.append(NewUpload(seq, kind, raw))
            if window is not None:
                windows[seq] = window
            acked.append(seq)
        return acked, rejected, errors, new, windows

    def _note_slots(self, device_id: str, uploads: Iterable[NewUpload]) -> None:
        """Fold install / rollback reports into the device's ``slots`` (what it runs now)."""
        reports = [
            body
            for u in uploads
            if u.kind == "status" and (body := json.loads(u.body_json)).get("event") in SLOT_EVENTS
        ]
        if not reports:
            return
        try:
            device = self.repos.devices.get(device_id)
            slots = fold_status(device.slots, reports)
            if slots is not None:
                self.devices.report(device_id, slots=slots)
        except ControlPlaneError as exc:  # the uploads are stored: the record waits for the next
            logger.warning("device %s: slots not updated: %s", device_id, exc)

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


def redact_captures(body_json: str) -> str:
    """The raw window as stored beside its index: captured inputs and outputs taken out (they
    are sealed in the ``captures`` table), the rest kept as the device sent it."""
    body: dict[str, Any] = json.loads(body_json)
    captures = body.get("captures")
    if not captures:
        return body_json
    body["captures"] = [
        {k: v for k, v in c.items() if k not in ("inputs", "outputs")} | {"sealed": True}
        for c in captures
        if isinstance(c, dict)
    ]
    return json.dumps(body, sort_keys=True)


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


def _first_problem(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"


def decode_upload(kind: str, body_json: str) -> tuple[NewWindow | None, str | None]:
    """Decode a well-formed upload once: (the window to index, None) or (None, why not)."""
    body: dict[str, Any] = json.loads(body_json)
    try:
        if kind == "status":
            StatusEvent.model_validate(body)
            return None, None
        window = TelemetryWindow.model_validate(body)
    except ValidationError as exc:
        return None, f"not a valid {kind}: {_first_problem(exc)}"
    if not (math.isfinite(window.started_at) and math.isfinite(window.ended_at)):
        return None, "not a valid telemetry_window: started_at/ended_at must be finite"
    return new_window(window), None


def fast_window(device_id: str, seq: int, body_json: str) -> NewWindow | None:
    """The common case in one pass: a telemetry window parsed and validated by pydantic-core
    straight from the JSON text (no ``json.loads``, no second walk). None when anything is
    off: the caller then runs :func:`check_upload` and :func:`decode_upload`, which name
    the problem."""
    if seq < 1 or len(body_json) > MAX_UPLOAD_BYTES:
        return None
    try:
        window = TelemetryWindow.model_validate_json(body_json)
    except ValidationError:
        return None
    if (
        window.device_id != device_id
        or window.sequence != seq
        or not (math.isfinite(window.started_at) and math.isfinite(window.ended_at))
    ):
        return None
    return new_window(window)


def new_window(window: TelemetryWindow) -> NewWindow:
    """The index columns and the JSON of a validated window (pydantic encodes it)."""
    return NewWindow(
        model_name=window.model_name,
        model_version=window.model_version,
        package_id=window.package_id,
        started_at=window.started_at,
        ended_at=window.ended_at,
        bucket_start=math.floor(window.started_at / BUCKET_S) * BUCKET_S,
        requests=window.requests,
        rows=window.rows,
        errors=window.errors,
        invalid=window.invalid,
        histograms_json=window.model_dump_json(include={"inputs", "outputs"}),
        latency_json=window.latency_ms.model_dump_json(),
        captures=tuple(
            NewCapture(c.prediction_id, c.at, c.outputs, c.inputs) for c in window.captures
        ),
        alias=window.alias,
    )
