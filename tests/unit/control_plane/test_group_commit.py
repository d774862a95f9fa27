"""The group commit's contract: answers per upload, and a failed group retried one by one so
only the upload that fails gets the error."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from control_plane.errors import Conflict
from control_plane.services.ingest import GroupCommit, _Job
from control_plane.store.records import NewUpload, UploadBatch


def _batch(device: str, *seqs: int) -> UploadBatch:
    return UploadBatch(device, [NewUpload(s, "status", "{}") for s in seqs], "grpc")


def test_a_failed_group_is_retried_one_by_one_and_only_the_culprit_fails() -> None:
    calls: list[list[str]] = []

    def write(batches: Sequence[UploadBatch]) -> list[list[int]]:
        calls.append([b.device_id for b in batches])
        if any(b.device_id == "bad" for b in batches):
            raise Conflict("the store refused a write")
        return [[i.seq for i in b.items] for b in batches]

    group = GroupCommit(write, max_batch=8)
    # two uploads queued as concurrent callers leave them, then one caller commits the group
    jobs = [_Job(_batch("good", 1, 2)), _Job(_batch("bad", 7))]
    group._queue += jobs
    group.arrive()
    assert group.store(_batch("late", 3)) == [3]
    assert calls == [["good", "bad", "late"], ["good"], ["bad"], ["late"]]
    assert jobs[0].done and jobs[0].stored == [1, 2] and jobs[0].error is None
    assert jobs[1].done and isinstance(jobs[1].error, Conflict) and jobs[1].stored is None
    assert group.commits == 2 and group.uploads == 2


def test_a_lone_caller_does_not_linger_and_a_writer_waits_for_callers_still_decoding() -> None:
    groups: list[list[str]] = []

    def write(batches: Sequence[UploadBatch]) -> list[list[int]]:
        groups.append([b.device_id for b in batches])
        return [[i.seq for i in b.items] for b in batches]

    group = GroupCommit(write, linger_s=10.0)
    group.arrive()
    assert group.store(_batch("alone", 1)) == [1]  # nobody else decoding: no 10 s wait
    group.arrive()  # "other" is still decoding when "first" becomes the writer
    group.arrive()
    done: list[list[int]] = []
    writer = threading.Thread(target=lambda: done.append(group.store(_batch("first", 2))))
    writer.start()
    deadline = time.monotonic() + 5
    while group.queued() < 1 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert group.store(_batch("other", 3)) == [3]
    writer.join(5)
    assert done == [[2]] and groups == [["alone"], ["first", "other"]]
    group.arrive()
    group.leave()  # a caller with nothing to store does not hold writers back
    group.arrive()
    assert group.store(_batch("last", 4)) == [4]


def test_max_batch_is_checked() -> None:
    with pytest.raises(ValueError, match="max_batch 0"):
        GroupCommit(lambda b: [], max_batch=0)
