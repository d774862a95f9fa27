"""Captured samples sealed with AES-256-GCM; the key file is private."""

from __future__ import annotations

from pathlib import Path

import pytest

from control_plane.crypto import KEY_NAME, SampleCipher, load_or_create_key
from control_plane.errors import InvalidInput


def test_round_trip_and_the_key_is_made_once_with_mode_0600(tmp_path: Path) -> None:
    cipher = SampleCipher.from_key_dir(tmp_path / "keys")
    sealed = cipher.encrypt(b'{"input": [0.1, 0.2]}', b"cam-1/7")
    assert b"0.1" not in sealed
    assert cipher.decrypt(sealed, b"cam-1/7") == b'{"input": [0.1, 0.2]}'
    key_file = tmp_path / "keys" / KEY_NAME
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert SampleCipher.from_key_dir(tmp_path / "keys").decrypt(sealed, b"cam-1/7")  # same key
    assert cipher.encrypt(b"x", b"a") != cipher.encrypt(b"x", b"a")  # fresh nonce each time


@pytest.mark.parametrize(
    "tamper",
    [
        lambda s: s[:-1] + bytes([s[-1] ^ 1]),  # a flipped tag bit
        lambda s: s[:20] + bytes([s[20] ^ 1]) + s[21:],  # a flipped ciphertext bit
        lambda s: b"\x02" + s[1:],  # an unknown version
        lambda s: s[:10],  # truncated
    ],
)
def test_altered_bytes_do_not_decrypt(tmp_path: Path, tamper: object) -> None:
    cipher = SampleCipher.from_key_dir(tmp_path)
    sealed = cipher.encrypt(b"sample body", b"cam-1/1")
    with pytest.raises(InvalidInput):
        cipher.decrypt(tamper(sealed), b"cam-1/1")  # type: ignore[operator]


def test_a_sample_moved_to_another_record_or_key_does_not_decrypt(tmp_path: Path) -> None:
    cipher = SampleCipher.from_key_dir(tmp_path / "a")
    sealed = cipher.encrypt(b"sample body", b"cam-1/1")
    with pytest.raises(InvalidInput, match="another record"):
        cipher.decrypt(sealed, b"cam-2/1")
    with pytest.raises(InvalidInput):
        SampleCipher.from_key_dir(tmp_path / "b").decrypt(sealed, b"cam-1/1")


def test_a_key_others_can_read_is_refused(tmp_path: Path) -> None:
    load_or_create_key(tmp_path)
    (tmp_path / KEY_NAME).chmod(0o644)
    with pytest.raises(InvalidInput, match="chmod 600"):
        load_or_create_key(tmp_path)


def test_a_key_of_the_wrong_size_is_refused(tmp_path: Path) -> None:
    (tmp_path / KEY_NAME).write_bytes(b"short")
    (tmp_path / KEY_NAME).chmod(0o600)
    with pytest.raises(InvalidInput, match="32-byte"):
        load_or_create_key(tmp_path)


def test_the_keyring_seals_with_the_current_key_and_opens_older_ones_by_id(
    tmp_path: Path,
) -> None:
    from control_plane.crypto import load_sample_keyring, rotate_sample_key, sample_key_id

    keys = tmp_path / "keys"
    first = load_sample_keyring(keys, environ={})
    old_id, sealed = first.seal(b"sample", b"cam-1/p1")
    assert old_id == first.current_id == sample_key_id((keys / KEY_NAME).read_bytes())
    assert rotate_sample_key(keys)[0] == old_id
    second = load_sample_keyring(keys, environ={})
    assert second.current_id != old_id and set(second.key_ids) == {old_id, second.current_id}
    assert second.open(old_id, sealed, b"cam-1/p1") == b"sample"
    assert second.seal(b"x", b"a")[0] == second.current_id
    (keys / "samples.d" / f"{old_id}.key").unlink()
    with pytest.raises(InvalidInput, match=f"sealed with key {old_id}"):
        load_sample_keyring(keys, environ={}).open(old_id, sealed, b"cam-1/p1")


def test_the_key_may_come_from_the_environment_and_a_bad_one_is_named(tmp_path: Path) -> None:
    from control_plane.crypto import load_sample_keyring, sample_key_id

    key = bytes(range(32))
    ring = load_sample_keyring(tmp_path, environ={"FLEETCAST_SAMPLES_KEY": key.hex()})
    assert ring.current_id == sample_key_id(key)
    assert not (tmp_path / KEY_NAME).exists()  # no file made when the key is given
    with pytest.raises(InvalidInput, match="FLEETCAST_SAMPLES_KEY: expected 64 hex"):
        load_sample_keyring(tmp_path, environ={"FLEETCAST_SAMPLES_KEY": "not hex"})
    with pytest.raises(InvalidInput, match="16 bytes"):
        load_sample_keyring(tmp_path, environ={"FLEETCAST_SAMPLES_KEY": "ab" * 16})
