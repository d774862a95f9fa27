"""The embedded broker's device logins: mosquitto's own hash format, and no login lost
when enrollments add logins concurrently (gRPC worker threads do)."""

from __future__ import annotations

import base64
import subprocess
import threading
from pathlib import Path

import pytest

from control_plane.transport.broker import MosquittoBroker, find_executable, password_hash
from tests.integration.transport_support import RawMqtt, wait_until

pytestmark = pytest.mark.integration


def test_the_hash_is_the_one_mosquitto_passwd_writes(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    passwd.touch()
    subprocess.run(
        [find_executable("mosquitto_passwd"), "-b", str(passwd), "devices/a", "s3cret"], check=True
    )
    login, stored = passwd.read_text().strip().split(":", 1)
    salt = base64.b64decode(stored.split("$")[3])
    assert password_hash("s3cret", salt) == stored
    assert password_hash("other", salt) != stored
    assert password_hash("s3cret") != stored  # a fresh salt each time


def test_concurrent_logins_are_all_kept_and_accepted(tmp_path: Path) -> None:
    broker = MosquittoBroker(tmp_path / "mosquitto")
    broker.start()
    try:
        ids = [f"dev-{t}-{i}" for t in range(8) for i in range(10)]

        def add(share: list[str]) -> None:
            for device_id in share:
                broker.add_device(device_id, f"pw-{device_id}")

        threads = [threading.Thread(target=add, args=(ids[t::8],)) for t in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert {f"devices/{d}" for d in ids} <= broker.logins()
        # mosquitto applies a SIGHUP in its own loop: allow it a moment to re-read the file
        for device_id in (ids[0], ids[-1]):
            assert wait_until(lambda d=device_id: _connects(broker.port, d, f"pw-{d}"), 10)
        assert not _connects(broker.port, ids[1], "wrong")
    finally:
        broker.stop()


def _connects(port: int, device_id: str, password: str) -> bool:
    client = RawMqtt(port, f"devices/{device_id}", password, f"probe-{device_id}")
    try:
        return client.connected.is_set()
    finally:
        client.close()
