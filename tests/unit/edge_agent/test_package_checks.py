"""Hostile packages: zip bombs, lying sizes, odd entries and crafted zips are refused cheaply.

Real ed25519 keys and real zip bytes (written by hand where zipfile would not
write them); memory is measured with tracemalloc's peak, never time.
"""

from __future__ import annotations

import hashlib
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from manifests import make_manifest
from zip_support import (
    STORED,
    Entry,
    build_zip,
    deflated,
    stored,
    zeros_bomb,
)

from control_plane.compiler.package import build_package
from edge_agent.core.manifest import Manifest, ModelFile
from edge_agent.errors import PackageError
from edge_agent.package import open_package, read_package

MODEL = b"\x08\x01" + bytes(range(256)) * 64  # stands in for an ONNX file: 16 KiB
KEY = Ed25519PrivateKey.generate()
PUBLIC = KEY.public_key()
MB = 1024 * 1024


def signed_manifest(model: bytes = MODEL, size: int | None = None) -> Manifest:
    manifest = make_manifest()
    model_file = ModelFile(
        path="model.onnx",
        sha256=hashlib.sha256(model).hexdigest(),
        size_bytes=len(model) if size is None else size,
    )
    return manifest.model_copy(update={"model_file": model_file})


def entries_for(manifest: Manifest, sign_with: Ed25519PrivateKey = KEY) -> list[Entry]:
    body = manifest.canonical_bytes()
    return [deflated("manifest.json", body), stored("manifest.sig", sign_with.sign(body))]


def refused(data: bytes) -> PackageError:
    with pytest.raises(PackageError) as info:
        open_package(data, PUBLIC)
    return info.value


def peak_bytes(run: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_good_package_still_opens() -> None:
    manifest = signed_manifest()
    data = build_package(manifest, MODEL, KEY)
    package = open_package(data, PUBLIC)
    assert package.model_bytes == MODEL and package.size_bytes == len(data)
    assert read_package(data)[2] == MODEL


def _expect_refused(data: bytes, check: str, match: str) -> int:
    """Peak Python memory (bytes) of refusing ``data`` with ``check`` and a message matching."""
    error: list[PackageError] = []

    def run() -> None:
        try:
            open_package(data, PUBLIC)
        except PackageError as exc:
            error.append(exc)

    peak = peak_bytes(run)
    assert error, "the hostile package was accepted"
    assert error[0].check == check, error[0]
    assert match in str(error[0])
    return peak


def test_unsigned_zip_bomb_is_refused_at_the_signature_in_bounded_memory() -> None:
    # 2 MB on the wire, 2 GiB inflated; the manifest is signed by someone else
    manifest = signed_manifest(size=2 << 30)
    bomb = build_zip(
        [*entries_for(manifest, Ed25519PrivateKey.generate()), zeros_bomb("model.onnx", 2)]
    )
    assert len(bomb) < 3 * MB
    peak = _expect_refused(bomb, "signature", "does not verify")
    assert peak < len(bomb) + 16 * MB, f"refusing a {len(bomb)}-byte bomb peaked at {peak} bytes"


def test_signed_manifest_cannot_make_the_model_entry_inflate_past_its_size() -> None:
    # the manifest (validly signed) says 16 KiB; the entry's header says 2 GiB
    bomb = build_zip([*entries_for(signed_manifest()), zeros_bomb("model.onnx", 2)])
    peak = _expect_refused(bomb, "format", "declares 2147483648 bytes, the manifest says 16386")
    assert peak < len(bomb) + 16 * MB
    # the header agrees with the manifest, the deflate stream inflates to 2 GiB: read stops
    lying = zeros_bomb("model.onnx", 2, declared=len(MODEL))
    bomb = build_zip([*entries_for(signed_manifest()), lying])
    peak = _expect_refused(bomb, "format", "corrupt entry 'model.onnx'")
    assert peak < len(bomb) + 16 * MB


def test_manifest_bomb_is_capped_before_the_signature() -> None:
    bomb = build_zip(
        [
            zeros_bomb("manifest.json", 1),
            stored("manifest.sig", bytes(64)),
            stored("model.onnx", MODEL),
        ]
    )
    peak = _expect_refused(bomb, "format", "'manifest.json' declares 1073741824 bytes (limit")
    assert peak < len(bomb) + 16 * MB


def test_model_over_the_cap_is_refused_even_when_signed() -> None:
    manifest = signed_manifest(size=2 << 30)
    data = build_zip([*entries_for(manifest), zeros_bomb("model.onnx", 2)])
    _expect_refused(data, "format", "over the limit")


def test_model_shorter_than_declared_is_refused() -> None:
    manifest = signed_manifest()
    short = MODEL[:-10]
    entry = Entry("model.onnx", short, STORED, __import__("zlib").crc32(short), len(MODEL))
    _expect_refused(build_zip([*entries_for(manifest), entry]), "format", "holds 16376 bytes")


def test_extra_and_duplicate_entries_are_refused() -> None:
    manifest = signed_manifest()
    head = entries_for(manifest)
    model = stored("model.onnx", MODEL)
    twice = build_zip([*head, model, stored("model.onnx", b"another model")])
    _expect_refused(twice, "format", "package has 4 entries; expected exactly 3")
    extra = build_zip([*head, model, stored("notes.txt", b"hi")])
    _expect_refused(extra, "format", "package has 4 entries; expected exactly 3")
    # three entries, one of them twice (zipfile's namelist would show the last copy only)
    duplicate = build_zip([head[0], model, stored("model.onnx", b"another model")])
    _expect_refused(duplicate, "format", "entry 'model.onnx' appears twice")


@pytest.mark.parametrize("name", ["../model.onnx", "/model.onnx", "a/../../model.onnx"])
def test_entry_names_that_climb_out_are_refused(name: str) -> None:
    manifest = signed_manifest()
    data = build_zip([*entries_for(manifest), stored(name, MODEL)])
    _expect_refused(data, "format", "is absolute or climbs out")


def test_unknown_entry_and_missing_model_are_refused() -> None:
    manifest = signed_manifest()
    data = build_zip([*entries_for(manifest), stored("model.exe", MODEL)])
    _expect_refused(data, "format", "unexpected entry 'model.exe'")
    tflite = build_zip([*entries_for(manifest), stored("model.tflite", MODEL)])
    _expect_refused(tflite, "format", "entry 'model.onnx' is missing")


def test_crafted_zips_map_to_format_errors() -> None:
    manifest = signed_manifest()
    head = entries_for(manifest)
    good = stored("model.onnx", MODEL)
    cases = {
        "compression method 99": Entry("model.onnx", MODEL, 99, good.crc, len(MODEL)),
        "is encrypted": Entry("model.onnx", MODEL, STORED, good.crc, len(MODEL), flags=0x1),
        "corrupt entry 'model.onnx': error": Entry(
            "model.onnx", b"\xff" * 64, 8, good.crc, len(MODEL)
        ),
        "corrupt entry 'model.onnx': BadZipFile": Entry(
            "model.onnx", MODEL, STORED, good.crc ^ 1, len(MODEL)
        ),
    }
    for message, entry in cases.items():
        _expect_refused(build_zip([*head, entry]), "format", message)
    for junk in (b"", b"not a zip at all", build_package(manifest, MODEL, KEY)[:-30]):
        error = refused(junk)
        assert error.check == "format" and "zip" in error.detail, error


def test_swapped_model_and_foreign_key_still_refused() -> None:
    manifest = signed_manifest()
    other = bytes(reversed(MODEL))
    swapped = build_zip([*entries_for(manifest), stored("model.onnx", other)])
    _expect_refused(swapped, "hash", "model sha256")
    foreign = build_package(manifest, MODEL, Ed25519PrivateKey.generate())
    _expect_refused(foreign, "signature", "does not verify")


def test_a_package_file_is_hashed_and_read_in_chunks(tmp_path: Path) -> None:
    path = tmp_path / "p.fcpkg"
    path.write_bytes(build_package(signed_manifest(), MODEL, KEY))
    package = open_package(
        path, PUBLIC, expected_sha256=hashlib.sha256(path.read_bytes()).hexdigest()
    )
    assert package.model_bytes == MODEL


def test_any_trusted_key_verifies_and_a_refusal_names_every_key_tried() -> None:
    """After a key rotation a device trusts two keys: a package of either installs."""
    from edge_agent.package import key_id

    data = build_package(signed_manifest(), MODEL, KEY)
    rotated = Ed25519PrivateKey.generate().public_key()
    assert open_package(data, [rotated, PUBLIC]).manifest.package_id  # the second one signed it
    stranger = Ed25519PrivateKey.generate().public_key()
    with pytest.raises(PackageError) as info:
        open_package(data, [rotated, stranger])
    assert info.value.check == "signature"
    assert key_id(rotated) in str(info.value) and key_id(stranger) in str(info.value)
    with pytest.raises(PackageError, match="does not verify with keys none"):
        open_package(data, [])
