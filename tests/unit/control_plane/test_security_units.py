"""Issue #7: the pure parts of the control plane's hardening, fast."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from control_plane.enrollment import RESERVED_IDS, check_device_id
from control_plane.errors import InvalidInput, ResourceExhausted
from control_plane.quotas import IngestQuota, QuotaLimits
from control_plane.signing import PRIVATE_NAME, generate_keypair
from control_plane.transport.limits import CallLimiter
from edge_agent.core.netaddr import is_loopback, split_host_port
from edge_agent.core.topics import device_login


def test_keys_generate_force_writes_a_fresh_0600_file_and_never_follows_a_symlink(
    tmp_path: Path,
) -> None:
    keys = tmp_path / "keys"
    private, _ = generate_keypair(keys)
    private.chmod(0o644)
    generate_keypair(keys, overwrite=True)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600

    victim = tmp_path / "victim.txt"
    victim.write_text("do not touch")
    private.unlink()
    (keys / PRIVATE_NAME).symlink_to(victim)
    generate_keypair(keys, overwrite=True)
    assert victim.read_text() == "do not touch"
    assert not (keys / PRIVATE_NAME).is_symlink()
    assert stat.S_IMODE((keys / PRIVATE_NAME).stat().st_mode) == 0o600
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700


def test_reserved_ids_are_refused_and_device_logins_have_their_own_namespace() -> None:
    for name in RESERVED_IDS:
        with pytest.raises(InvalidInput, match="reserved"):
            check_device_id(name)
    assert device_login("pi-1") == "devices/pi-1"
    with pytest.raises(InvalidInput):
        check_device_id("devices/pi-1")  # '/' is never in a device id


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.8.9.1", True), ("::1", True), ("[::1]", True),
     ("localhost", True), ("0.0.0.0", False), ("", False), ("::", False),
     ("10.0.0.5", False), ("cp.example", False)],
)  # fmt: skip
def test_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_split_host_port() -> None:
    assert split_host_port("[::1]:50051") == ("::1", "50051")
    assert split_host_port(":50051") == ("", "50051")


def test_quota_refuses_over_budget_then_refills_and_never_sticks() -> None:
    now = [0.0]
    quota = IngestQuota(QuotaLimits(100, 1000, 1, 10), lambda: now[0])
    assert quota.take("a", 900, 1) is None
    assert "over its upload quota" in (quota.take("a", 200, 1) or "")
    assert quota.take("b", 900, 1) is None  # per device
    now[0] += 2
    assert quota.take("a", 200, 1) is None
    now[0] += 100
    assert quota.take("a", 5000, 1) is None  # larger than the burst: passes on a full bucket
    assert quota.take("a", 1, 1) is not None  # ... and leaves a debt
    assert quota.take("c", 1, 8) is None
    assert "over its upload rate" in (quota.take("c", 1, 5) or "")
    now[0] += 3
    assert quota.take("c", 1, 5) is None


def test_call_limiter_one_stream_per_device_and_a_reserve_for_short_calls() -> None:
    limiter = CallLimiter(workers=16, per_device=4)
    first = limiter.admit("a", long=True, stream=True)
    second = limiter.admit("a", long=True, stream=True)
    assert first.replaced.is_set() and not second.replaced.is_set()
    limiter.admit("a")
    limiter.admit("a")
    with pytest.raises(ResourceExhausted, match="device 'a' has 4 calls"):
        limiter.admit("a")
    first.release()
    first.release()  # idempotent
    assert limiter.calls("a") == 3
    longs = [limiter.admit(f"d{i}", long=True) for i in range(limiter.long_calls - 1)]
    with pytest.raises(ResourceExhausted, match="streams and downloads"):
        limiter.admit("z", long=True)
    assert limiter.admit("z") is not None  # short calls (Enroll, uploads) still admitted
    assert len(longs) + 1 == limiter.long_calls < 16


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("30m", 1800), ("24h", 86400), ("7d", 604800)]
)
def test_token_ttl_durations(text: str, seconds: float) -> None:
    from control_plane.cli_fleet import duration

    assert duration(text) == seconds


def test_token_ttl_is_stored_and_bounded() -> None:
    from control_plane.services.enrollment import EnrollmentService
    from control_plane.store.factory import open_repositories

    repos = open_repositories(":memory:")
    enrollment = EnrollmentService(repos, lambda: 1000.0)
    enrollment.create_token("op", "dev-a", ttl=90)
    (row,) = repos.enrollment_tokens.list().items
    assert (row.created_at, row.expires_at, row.device_id) == (1000.0, 1090.0, "dev-a")
    for bad in (0, -5, 400 * 86400):
        with pytest.raises(InvalidInput, match="token ttl"):
            enrollment.create_token("op", None, ttl=bad)
    repos.close()


def test_the_store_file_and_its_directory_are_private(tmp_path: Path) -> None:
    from control_plane.app import open_store
    from control_plane.settings import Settings

    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    (data / "store.db").touch(mode=0o644)
    repos = open_store(Settings(data_dir=data))
    try:
        repos.devices.list()
        for path in [data / "store.db", *data.glob("store.db-*")]:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
    finally:
        repos.close()
