"""Devices, enrollment tokens, commands, packages, uploads and audit on both backends."""

from __future__ import annotations

import pytest

from control_plane.errors import Conflict, InvalidInput, NotFound
from control_plane.store.records import NewDevice, NewUpload, Package, UploadBatch
from control_plane.store.sql.fleet import UPLOAD_CHUNK
from control_plane.store.sql.store import SqlRepositories

pytestmark = pytest.mark.integration


def _device(repos: SqlRepositories, device_id: str, **labels: str) -> None:
    repos.devices.add(NewDevice(device_id, f"hash-{device_id}", labels=labels), at=1.0)


def test_device_round_trips_every_field(repos: SqlRepositories) -> None:
    added = repos.devices.add(
        NewDevice(
            "cam-1",
            "h1",
            host={"arch": "x86_64"},
            labels={"site": "north", "tier": "edge"},
            profile_id="x86-64-generic",
            agent_version="0.1.0",
        ),
        at=10.5,
    )
    assert added == repos.devices.get("cam-1")
    assert (added.status, added.host, added.labels) == (
        "active",
        {"arch": "x86_64"},
        {"site": "north", "tier": "edge"},
    )
    assert (added.enrolled_at, added.last_seen, added.next_version) == (10.5, None, 1)


def test_device_twice_is_a_conflict_and_missing_is_not_found(repos: SqlRepositories) -> None:
    _device(repos, "cam-1")
    with pytest.raises(Conflict, match="cam-1"):
        _device(repos, "cam-1")
    with pytest.raises(NotFound, match="cam-9"):
        repos.devices.get("cam-9")
    assert repos.devices.find("cam-9") is None


def test_device_list_filters_by_labels_status_profile_and_pages(repos: SqlRepositories) -> None:
    for i in range(5):
        _device(repos, f"d{i}", site="north" if i % 2 == 0 else "south")
    repos.devices.revoke("d2", at=5.0)
    north = repos.devices.list(labels={"site": "north"})
    assert [d.id for d in north.items] == ["d0", "d2", "d4"]
    active_north = repos.devices.list(labels={"site": "north"}, status="active")
    assert [d.id for d in active_north.items] == ["d0", "d4"]
    first = repos.devices.list(limit=2)
    second = repos.devices.list(limit=2, offset=first.next_offset or 0)
    last = repos.devices.list(limit=2, offset=second.next_offset or 0)
    assert [[d.id for d in p.items] for p in (first, second, last)] == [
        ["d0", "d1"],
        ["d2", "d3"],
        ["d4"],
    ]
    assert (first.next_offset, second.next_offset, last.next_offset) == (2, 4, None)
    repos.devices.report("d1", profile_id="rpi4", agent_version="0.2.0", slots={"a": "sha"})
    assert [d.id for d in repos.devices.list(profile_id="rpi4").items] == ["d1"]
    with pytest.raises(InvalidInput, match="limit"):
        repos.devices.list(limit=0)
    with pytest.raises(InvalidInput, match="status"):
        repos.devices.list(status="sleeping")


def test_labels_are_replaced_and_checked(repos: SqlRepositories) -> None:
    _device(repos, "d1", site="north")
    assert repos.devices.set_labels("d1", {"zone": "b"}).labels == {"zone": "b"}
    assert repos.devices.list(labels={"site": "north"}).items == []
    with pytest.raises(InvalidInput, match="label key"):
        repos.devices.set_labels("d1", {"Bad Key": "x"})


def test_revoke_touch_and_report(repos: SqlRepositories) -> None:
    _device(repos, "d1")
    repos.devices.touch("d1", at=7.0)
    revoked = repos.devices.revoke("d1", at=8.0)
    assert (revoked.status, revoked.revoked_at, revoked.last_seen) == ("revoked", 8.0, 7.0)
    assert repos.devices.revoke("d1", at=9.0).revoked_at == 8.0  # idempotent
    assert repos.devices.revoked_ids() == ["d1"]
    reported = repos.devices.report("d1", slots={"a": "sha-a", "active": "a"})
    assert reported.slots == {"a": "sha-a", "active": "a"}
    with pytest.raises(NotFound):
        repos.devices.touch("nope", at=1.0)


def test_enrollment_token_is_single_use(repos: SqlRepositories) -> None:
    repos.enrollment_tokens.add("tok", None, created_at=1.0, expires_at=100.0)
    device = repos.devices.enroll(NewDevice("cam-1", "secret-hash"), "tok", at=2.0)
    assert device.id == "cam-1"
    token = repos.enrollment_tokens.get("tok")
    assert (token.used_by, token.used_at) == ("cam-1", 2.0)
    with pytest.raises(Conflict, match="already used"):
        repos.devices.enroll(NewDevice("cam-2", "x"), "tok", at=3.0)
    assert repos.devices.find("cam-2") is None
    assert repos.enrollment_tokens.list(unused_only=True).items == []


def test_enrollment_token_expiry_binding_and_unknown(repos: SqlRepositories) -> None:
    repos.enrollment_tokens.add("old", None, created_at=1.0, expires_at=5.0)
    repos.enrollment_tokens.add("bound", "cam-7", created_at=1.0, expires_at=None)
    with pytest.raises(Conflict, match="expired"):
        repos.devices.enroll(NewDevice("cam-1", "x"), "old", at=5.0)
    with pytest.raises(Conflict, match="cam-7"):
        repos.devices.enroll(NewDevice("cam-1", "x"), "bound", at=2.0)
    with pytest.raises(NotFound, match="unknown"):
        repos.devices.enroll(NewDevice("cam-1", "x"), "never-issued", at=2.0)
    assert repos.devices.enroll(NewDevice("cam-7", "x"), "bound", at=2.0).id == "cam-7"
    with pytest.raises(InvalidInput, match="expire"):
        repos.enrollment_tokens.add("t", None, created_at=5.0, expires_at=5.0)


def test_enrolling_an_enrolled_device_keeps_the_token_unused(repos: SqlRepositories) -> None:
    _device(repos, "cam-1")
    repos.enrollment_tokens.add("tok", None, created_at=1.0, expires_at=None)
    with pytest.raises(Conflict, match="already enrolled"):
        repos.devices.enroll(NewDevice("cam-1", "x"), "tok", at=2.0)
    assert repos.enrollment_tokens.get("tok").used_by is None  # rolled back with the device


def test_commands_get_per_device_execution_versions(repos: SqlRepositories) -> None:
    _device(repos, "a")
    _device(repos, "b")
    a1 = repos.commands.add("a", "deploy", {"sha256": "s1"}, at=1.0)
    a2 = repos.commands.add("a", "config", {"k": 1}, at=2.0)
    b1 = repos.commands.add("b", "deploy", {"sha256": "s1"}, at=3.0)
    assert [(c.device_id, c.execution_version) for c in (a1, a2, b1)] == [
        ("a", 1),
        ("a", 2),
        ("b", 1),
    ]
    assert [c.id for c in repos.commands.pending()] == [a1.id, a2.id, b1.id]
    assert [c.id for c in repos.commands.pending("b")] == [b1.id]
    with pytest.raises(NotFound, match="ghost"):
        repos.commands.add("ghost", "deploy", {}, at=1.0)


def test_ack_is_recorded_once_and_revoked_devices_have_no_pending(
    repos: SqlRepositories,
) -> None:
    _device(repos, "a")
    _device(repos, "b")
    cmd = repos.commands.add("a", "deploy", {}, at=1.0)
    other = repos.commands.add("b", "deploy", {}, at=1.0)
    acked = repos.commands.ack(cmd.id, "a", ok=True, result={"slot": "b"}, at=2.0)
    again = repos.commands.ack(cmd.id, "a", ok=False, result={"x": 1}, at=3.0)
    assert (acked.status, acked.result, acked.acked_at) == ("ok", {"slot": "b"}, 2.0)
    assert again == acked
    with pytest.raises(NotFound, match="not for device"):
        repos.commands.ack(other.id, "a", ok=True, result={}, at=2.0)
    repos.devices.revoke("b", at=4.0)
    assert repos.commands.pending() == []
    assert [c.id for c in repos.commands.list(status="ok").items] == [cmd.id]
    assert [c.id for c in repos.commands.list(device_id="b").items] == [other.id]


def _package(sha: str, version: str = "1", release: int = 1) -> Package:
    return Package(
        sha256=sha,
        package_id=f"digits-{version}-x86",
        model_name="digits",
        model_version=version,
        profile_id="x86-64-generic",
        release=release,
        size_bytes=1234,
        path=f"/catalog/{sha}.fcpkg",
        manifest={"model_name": "digits", "release": release},
        created_at=1.0,
    )


def test_packages_are_content_addressed(repos: SqlRepositories) -> None:
    first = repos.packages.put(_package("aa"))
    assert repos.packages.put(_package("aa", release=99)) == first  # same sha256: same package
    repos.packages.put(_package("bb", version="2", release=2))
    repos.packages.put(_package("cc", version="2", release=3))
    assert repos.packages.get("aa").manifest == {"model_name": "digits", "release": 1}
    found = repos.packages.find("digits", "2", "x86-64-generic")
    assert found is not None and found.sha256 == "cc"
    assert repos.packages.find("digits", "2", "rpi4") is None
    assert [p.sha256 for p in repos.packages.list(model_version="2").items] == ["bb", "cc"]
    with pytest.raises(NotFound, match="zz"):
        repos.packages.get("zz")


def test_uploads_are_stored_exactly_once_per_device_and_seq(repos: SqlRepositories) -> None:
    batch = [NewUpload(1, "telemetry_window", '{"n":1}'), NewUpload(2, "status", '{"n":2}')]
    assert repos.uploads.add("d1", batch, "grpc", at=1.0) == [1, 2]
    replay = [NewUpload(2, "status", '{"n":"dup"}'), NewUpload(3, "status", '{"n":3}')]
    assert repos.uploads.add("d1", replay, "mqtt", at=2.0) == [3]
    assert repos.uploads.add("d2", [NewUpload(1, "status", "{}")], "mqtt", at=3.0) == [1]
    stored = repos.uploads.list(device_id="d1").items
    assert [(u.seq, u.body_json, u.transport) for u in stored] == [
        (1, '{"n":1}', "grpc"),
        (2, '{"n":2}', "grpc"),
        (3, '{"n":3}', "mqtt"),
    ]
    assert [u.seq for u in repos.uploads.list(kind="status", since=2.0).items] == [3, 1]


def test_a_group_over_several_statements_answers_each_upload_as_alone(
    repos: SqlRepositories,
) -> None:
    """A group commit spanning several multi-row INSERTs: each batch gets exactly the
    sequence numbers new to the store, a resend (earlier, or twice in one group) once."""
    assert repos.uploads.add("d1", [NewUpload(3, "status", '{"old":3}')], "grpc", at=1.0) == [3]
    size = 2 * UPLOAD_CHUNK + 3  # the rows of the group below cross two statement boundaries
    group = [
        UploadBatch("d1", [NewUpload(s, "status", f'{{"s":{s}}}') for s in range(1, size)], "mqtt"),
        UploadBatch("d2", [NewUpload(1, "status", "{}"), NewUpload(1, "status", '{"dup":1}')],
                    "grpc"),
        UploadBatch("d1", [NewUpload(size - 1, "status", '{"again":1}'), NewUpload(size, "status",
                    "{}")], "grpc"),
    ]  # fmt: skip
    answers = repos.uploads.add_group(group, at=2.0)
    assert answers == [[s for s in range(1, size) if s != 3], [1], [size]]
    stored = {u.seq: u.body_json for u in repos.uploads.list(device_id="d1", limit=100).items}
    assert sorted(stored) == list(range(1, size + 1))
    assert stored[3] == '{"old":3}' and stored[size - 1] == f'{{"s":{size - 1}}}'
    assert [u.body_json for u in repos.uploads.list(device_id="d2").items] == ["{}"]
    assert repos.uploads.add_group(group, at=3.0) == [[], [], []]  # all of it again: acked, not new


def test_audit_keeps_before_after_and_filters_newest_first(repos: SqlRepositories) -> None:
    repos.audit.add(
        "alice",
        "device.revoke",
        "d1",
        at=1.0,
        before={"status": "active"},
        after={"status": "revoked"},
    )
    repos.audit.add("bob", "command.deploy", "d1", at=2.0, detail={"sha256": "aa"})
    repos.audit.add("alice", "token.create", "t1", at=3.0)
    entries = repos.audit.list().items
    assert [e.action for e in entries] == ["token.create", "command.deploy", "device.revoke"]
    revoke = entries[2]
    assert (revoke.before, revoke.after, revoke.detail) == (
        {"status": "active"},
        {"status": "revoked"},
        {},
    )
    assert [e.at for e in repos.audit.list(actor="alice").items] == [3.0, 1.0]
    assert [e.action for e in repos.audit.list(subject="d1", since=1.5).items] == ["command.deploy"]
    assert [e.action for e in repos.audit.list(until=2.0).items] == ["device.revoke"]
    page = repos.audit.list(limit=2)
    assert (len(page.items), page.next_offset) == (2, 2)
