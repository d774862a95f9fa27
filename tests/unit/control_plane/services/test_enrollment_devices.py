"""Enrollment and devices: tokens with a TTL, credentials, labels, revocation, batched activity."""

from __future__ import annotations

import pytest
from conftest import Clock, FakeLogins, enroll

from control_plane.app import Fleetcast
from control_plane.enrollment import token_hash
from control_plane.errors import Conflict, InvalidInput, NotFound, Unauthenticated
from control_plane.store.records import NewDevice


def test_a_token_enrolls_once_and_its_credential_authenticates(services: Fleetcast) -> None:
    token = services.enrollment.create_token("op", "dev-a")
    creds = services.enrollment.enroll(token, "dev-a", {"os": "linux", "agent_version": "0.3"})
    assert services.devices.authenticate(creds.device_token) == "dev-a"
    device = services.devices.get("dev-a")
    assert (device.status, device.agent_version, device.host["os"]) == ("active", "0.3", "linux")
    with pytest.raises(Unauthenticated, match="unknown or already used"):
        services.enrollment.enroll(token, "dev-b", {})
    with pytest.raises(Unauthenticated, match="unknown or already used"):
        services.enrollment.enroll("enr_never-minted", "dev-b", {})
    actions = [e.action for e in services.repos.audit.list().items]
    assert actions == ["device.enroll", "enrollment_token.create"]  # newest first


def test_tokens_expire_after_their_ttl(services: Fleetcast, clock: Clock) -> None:
    short = services.enrollment.create_token("op", "dev-a", ttl=90)
    unbound = services.enrollment.create_token("op")
    clock.now += 91
    with pytest.raises(Unauthenticated, match="expired 0.0 h ago: mint a new one"):
        services.enrollment.enroll(short, "dev-a", {})
    assert services.enrollment.enroll(unbound, "dev-b", {}).device_id == "dev-b"
    clock.now += 24 * 3600
    late = services.enrollment.create_token("op")
    clock.now += 24 * 3600
    with pytest.raises(Unauthenticated, match="expired"):
        services.enrollment.enroll(late, "dev-c", {})
    for bad in (0, -1, 400 * 86400):
        with pytest.raises(InvalidInput, match="token ttl"):
            services.enrollment.create_token("op", ttl=bad)


def test_ids_are_checked_when_minting_and_when_enrolling(services: Fleetcast) -> None:
    with pytest.raises(InvalidInput, match="reserved"):
        services.enrollment.create_token("op", "fleetcast-control-plane")
    with pytest.raises(InvalidInput, match="lower-case"):
        services.enrollment.create_token("op", "Bad Id")
    bound = services.enrollment.create_token("op", "dev-a")
    with pytest.raises(Unauthenticated, match="for device 'dev-a'"):
        services.enrollment.enroll(bound, "dev-b", {})
    enroll(services, "dev-c")
    with pytest.raises(Conflict, match="already enrolled"):
        services.enrollment.create_token("op", "dev-c")
    unbound = services.enrollment.create_token("op")
    with pytest.raises(Conflict, match="already enrolled"):
        services.enrollment.enroll(unbound, "dev-c", {})
    assert services.enrollment.enroll(unbound, "dev-d", {}).device_id == "dev-d"  # not used up


def test_the_broker_login_is_added_and_taken_back_when_the_store_refuses(
    services: Fleetcast,
) -> None:
    logins = services.enrollment.logins = FakeLogins()
    creds = services.enrollment.enroll(services.enrollment.create_token("op"), "dev-a", {})
    assert logins.logins == {"dev-a": creds.mqtt_password}
    logins.logins["dev-stale"] = "left over"
    with pytest.raises(Conflict, match="broker already has a login"):
        services.enrollment.create_token("op", "dev-stale")
    # the store refuses: another replica enrolled the id between the checks and the write
    token = services.enrollment.create_token("op")
    services.enrollment.check_new_id = lambda device_id: None  # type: ignore[method-assign]
    services.repos.devices.add(NewDevice("dev-z", "elsewhere"), at=1.0)
    with pytest.raises(Conflict, match="already enrolled"):
        services.enrollment.enroll(token, "dev-z", {})
    assert logins.logins == {"dev-a": creds.mqtt_password, "dev-stale": "left over"}
    assert services.repos.enrollment_tokens.get(token_hash(token)).used_by is None


def test_credentials_are_refused_when_malformed_unknown_forged_or_revoked(
    services: Fleetcast,
) -> None:
    token = enroll(services, "dev-a")
    for bad, reason in [
        ("no-dot", "malformed"),
        ("dev-x.secret", "unknown"),
        ("dev-a.forged", "unknown"),
    ]:
        with pytest.raises(Unauthenticated, match=reason):
            services.devices.authenticate(bad)
    services.devices.revoke("dev-a", "op")
    with pytest.raises(Unauthenticated, match="revoked"):
        services.devices.authenticate(token)
    assert not services.devices.is_active("dev-a") and not services.devices.is_active("nope")
    assert services.devices.revoked_ids() == ["dev-a"]
    (entry, *_) = services.repos.audit.list(action="device.revoke").items
    assert (entry.actor, entry.before, entry.after) == (
        "op",
        {"status": "active"},
        {"status": "revoked", "revoked_at": 1_000_000.0},
    )
    with pytest.raises(NotFound, match="not enrolled"):
        services.devices.revoke("dev-x", "op")


def test_devices_are_listed_by_label_and_labels_are_audited(services: Fleetcast) -> None:
    for device_id in ("dev-a", "dev-b", "dev-c"):
        enroll(services, device_id)
    services.devices.set_labels("dev-a", {"site": "north"}, "op")
    services.devices.set_labels("dev-b", {"site": "north", "tier": "canary"}, "op")
    north = services.devices.list(labels={"site": "north"})
    assert [d.id for d in north.items] == ["dev-a", "dev-b"]
    assert [d.id for d in services.devices.list(labels={"tier": "canary"}).items] == ["dev-b"]
    page = services.devices.list(limit=2)
    assert ([d.id for d in page.items], page.next_offset) == (["dev-a", "dev-b"], 2)
    (entry, _) = services.repos.audit.list(action="device.labels").items
    assert (entry.subject, entry.before, entry.after) == (
        "dev-b",
        {"labels": {}},
        {"labels": {"site": "north", "tier": "canary"}},
    )
    with pytest.raises(InvalidInput, match="label key"):
        services.devices.set_labels("dev-a", {"Bad Key": "x"}, "op")


def test_last_seen_and_refusals_are_batched_and_kept_when_a_flush_fails(
    services: Fleetcast, clock: Clock
) -> None:
    enroll(services, "dev-a")
    clock.now += 5
    services.devices.touch("dev-a")
    services.devices.note_refused("dev-a")
    assert services.repos.devices.get("dev-a").last_seen is None  # not written yet
    merged = services.devices.get("dev-a")
    assert (merged.last_seen, merged.uploads_refused) == (clock.now, 1)

    def broken(*_: object) -> None:
        raise RuntimeError("store away")

    real = services.repos.devices.record_activity
    services.repos.devices.record_activity = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        services.devices.flush_activity()
    services.repos.devices.record_activity = real  # type: ignore[method-assign]
    services.devices.note_refused("dev-a")
    services.devices.touch("gone-device")  # skipped, not an error
    services.devices.flush_activity()
    stored = services.repos.devices.get("dev-a")
    assert (stored.last_seen, stored.uploads_refused) == (clock.now, 2)
    assert services.devices.get("dev-a").uploads_refused == 2  # nothing counted twice


def test_tokens_minted_in_a_batch_are_bound_to_their_ids_and_enroll_once(
    services: Fleetcast,
) -> None:
    ids = [f"sim-{i:04d}" for i in range(20)]
    tokens = services.enrollment.create_tokens("op", ids, ttl=600)
    assert len(set(tokens)) == 20
    assert services.enrollment.enroll(tokens[3], "sim-0003", {}).device_id == "sim-0003"
    with pytest.raises(Unauthenticated, match="for device 'sim-0004'"):
        services.enrollment.enroll(tokens[4], "sim-0005", {})
    with pytest.raises(Unauthenticated, match="unknown or already used"):
        services.enrollment.enroll(tokens[3], "sim-0003", {})
    (entry,) = [e for e in services.repos.audit.list().items if e.action.startswith("enroll")]
    assert entry.detail["count"] == 20 and entry.detail["device_ids"] == ids


def test_a_batch_with_one_bad_id_mints_nothing_and_names_it(services: Fleetcast) -> None:
    enroll(services, "dev-c")
    for ids, problem in (
        (["dev-a", "dev-b", "dev-a"], "'dev-a' is listed twice"),
        (["dev-a", "dev-c"], "'dev-c' is already enrolled"),
        (["dev-a", "Bad Id"], "lower-case"),
    ):
        with pytest.raises((InvalidInput, Conflict), match=problem):
            services.enrollment.create_tokens("op", ids)
    minted = services.repos.enrollment_tokens.list().items
    assert [t.device_id for t in minted] == ["dev-c"]  # only the one enroll() used
