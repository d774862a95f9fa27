"""The device's manifest reader agrees with the pydantic record, manifest by manifest.

Both readers get the same bytes: manifests built with every optional part
(quantized tensors, feature names, fixed batch, metric, float nodes, benchmark,
token statistics) and, from each, thousands of malformed variants (every field
removed, an unknown field added at every level, every value replaced by values
of the other JSON types, bad literals and patterns, non-canonical spacing and
order, NaN). Each reader must accept exactly the manifests the other accepts,
and read the same values.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from manifests import make_manifest
from pydantic import ValidationError

from edge_agent.core import device_manifest
from edge_agent.core.device_manifest import (
    ManifestFormatError,
    canonical_json,
    parse_manifest,
)
from edge_agent.core.device_manifest import to_builtins as builtins
from edge_agent.core.manifest import (
    Benchmark,
    FidelityReport,
    FloatNode,
    Manifest,
    MetricDelta,
    Quantization,
    Signature,
    TensorSpec,
    TestVectors,
)


def record_reads(data: bytes) -> Manifest | None:
    """The validation of record: pydantic, then the canonical form (as edge_agent.package)."""
    try:
        manifest = Manifest.from_bytes(data)
        return manifest if manifest.canonical_bytes() == data else None
    except (ValidationError, ValueError):
        return None


def device_reads(data: bytes) -> device_manifest.Manifest | None:
    try:
        return parse_manifest(data)
    except ManifestFormatError:
        return None


def rich_manifest() -> Manifest:
    """Every optional part set, so the readers meet every type in the schema."""
    base = make_manifest(input_shape=(4,), classes=3)
    spec = TensorSpec(
        name="input",
        runtime_name="serving_default_input:0",
        dtype="float32",
        shape=(2, 4),
        model_dtype="int8",
        quantization=Quantization(scale=0.05, zero_point=-3),
        feature_names=("a", "b", "c", "d"),
    )
    out = TensorSpec(name="output", runtime_name="Identity:0", shape=(2, 3))
    fidelity = FidelityReport(
        rows=64,
        max_abs_error=0.25,
        mean_abs_error=0.01,
        top1_agreement=0.995,
        metric=MetricDelta(name="accuracy", fp32=0.98, candidate=0.975, delta=-0.005),
        passed=True,
        reasons=("ok",),
        task="classification",
        measure="top1_agreement",
        float_nodes=(FloatNode(name="fc1", op="MatMul", sensitivity=0.5, added_bytes=1024),),
    )
    return base.model_copy(
        update={
            "signature": Signature(inputs=(spec,), outputs=(out,), batch=2),
            "fidelity": fidelity,
            "benchmark": Benchmark(
                batch=1, latency_ms_p50=0.01, latency_ms_p95=0.02, runs=100, threads=1, host="h"
            ),
            "test_vectors": TestVectors(
                inputs={"input": [[0.5, 1.0, -2.0, 3.25]]},
                outputs={"output": [[0.1, 0.2, 0.7]]},
                atol=1e-05,
                rtol=0.001,
            ),
        }
    )


def token_manifest() -> Manifest:
    """Integer inputs with token statistics (pad and unknown ids)."""
    base = make_manifest()
    stats = base.reference.inputs[0].model_copy(
        update={"feature_axis": "tokens", "pad_id": 0, "unknown_id": 1}
    )
    spec = base.signature.inputs[0].model_copy(update={"dtype": "int64", "model_dtype": "int64"})
    return base.model_copy(
        update={
            "reference": base.reference.model_copy(update={"inputs": (stats,)}),
            "signature": base.signature.model_copy(update={"inputs": (spec,)}),
        }
    )


def calibrated_manifest() -> Manifest:
    """A classifier compiled with labels: the confidence calibration estimated accuracy reads."""
    from edge_agent.core.manifest import ConfidenceCalibration

    calibration = ConfidenceCalibration(
        edges=(0.0, 0.5, 0.9, 1.0), hit_rate=(0.4, 0.8, 0.97), rows=300, accuracy=0.9, source="v"
    )
    return make_manifest().model_copy(update={"calibration": calibration})


MANIFESTS = {
    "plain": make_manifest,
    "rich": rich_manifest,
    "tokens": token_manifest,
    "calibrated": calibrated_manifest,
}
OTHER_VALUES: list[Any] = [None, True, 0, -1, 2, 1.5, 1e300, "", "x", [], [1], {}, {"k": 1}]


def _paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every position in a JSON document (the first item of each array only)."""
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*path, key))
    elif isinstance(value, list) and value:
        yield from _paths(value[0], (*path, 0))


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    copy = json.loads(json.dumps(doc))
    target = copy
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return copy


def _delete(doc: Any, path: tuple[Any, ...]) -> Any:
    copy = json.loads(json.dumps(doc))
    target = copy
    for part in path[:-1]:
        target = target[part]
    del target[path[-1]]
    return copy


def malformed(doc: dict[str, Any]) -> Iterator[tuple[str, bytes]]:
    """Variants of a canonical manifest; many are refused, some (equal values) are not."""
    for path in _paths(doc):
        where = ".".join(map(str, path)) or "(root)"
        here: Any = doc
        for part in path:
            here = here[part]
        if isinstance(here, dict):
            grown = dict(here, zz_unknown=1)
            changed = _set(doc, path, grown) if path else grown
            yield f"{where}+unknown", canonical_json(changed)
        if not path:
            continue
        if isinstance(path[-1], str):
            yield f"{where}-removed", canonical_json(_delete(doc, path))
        for other in OTHER_VALUES:
            yield f"{where}={other!r}", canonical_json(_set(doc, path, other))
        if isinstance(here, str):
            for text in (here + "\n", " " + here, here.upper(), "float64", "9" * 64):
                yield f"{where}={text!r}", canonical_json(_set(doc, path, text))
        if isinstance(here, float) and here == int(here) and abs(here) < 1e15:
            yield f"{where}=int", canonical_json(_set(doc, path, int(here)))
        if isinstance(here, int) and not isinstance(here, bool):
            yield f"{where}=float", canonical_json(_set(doc, path, float(here)))


@pytest.mark.parametrize("name", sorted(MANIFESTS))
def test_readers_agree_on_valid_and_malformed_manifests(name: str) -> None:
    data = MANIFESTS[name]().canonical_bytes()
    record, device = record_reads(data), device_reads(data)
    assert record is not None and device is not None
    assert builtins(device) == record.model_dump(mode="json")
    doc = json.loads(data)
    cases = list(malformed(doc))
    assert len(cases) > 300
    refused = 0
    for label, variant in cases:
        record, device = record_reads(variant), device_reads(variant)
        assert (record is None) == (device is None), (
            f"{label}: record {'accepts' if record else 'refuses'}, "
            f"device {'accepts' if device else 'refuses'}"
        )
        if record is not None and device is not None:
            assert builtins(device) == record.model_dump(mode="json"), label
        else:
            refused += 1
    assert refused > len(cases) // 2  # most mutations break the schema or the canonical form


@pytest.mark.parametrize(
    "variant",
    [
        lambda d: d.replace(b'{"', b'{ "', 1),  # not canonical spacing
        lambda d: json.dumps(json.loads(d), sort_keys=False).encode(),
        lambda d: d.replace(b'"atol":0.0', b'"atol":NaN'),
        lambda d: d[:-1],  # truncated
        lambda d: b"[]",
        lambda d: b"\xff\xfe",
        lambda d: json.dumps(json.loads(d), ensure_ascii=True).encode(),
    ],
)
def test_both_refuse_bytes_that_are_not_the_canonical_form(variant: Any) -> None:
    data = variant(make_manifest().canonical_bytes())
    assert record_reads(data) is None and device_reads(data) is None


def test_errors_name_the_field() -> None:
    doc = json.loads(make_manifest().canonical_bytes())
    doc["signature"]["inputs"][0]["dtype"] = "float64"
    with pytest.raises(ManifestFormatError, match=r"signature\.inputs\.0\.dtype.*'float64'"):
        parse_manifest(canonical_json(doc))
    doc = json.loads(make_manifest().canonical_bytes())
    doc["release"] = 0
    with pytest.raises(ManifestFormatError, match=r"field release: 0 is less than 1"):
        parse_manifest(canonical_json(doc))
    doc = json.loads(make_manifest().canonical_bytes())
    del doc["profile"]["arch"]
    doc["profile"]["cpu"] = "x"
    with pytest.raises(ManifestFormatError, match=r"field profile: missing arch; unknown cpu"):
        parse_manifest(canonical_json(doc))


def test_device_records_are_frozen() -> None:
    manifest = parse_manifest(make_manifest().canonical_bytes())
    with pytest.raises(AttributeError, match="frozen"):
        manifest.release = 2  # type: ignore[misc]


def test_ed25519_keys_load_without_the_serialization_module_and_agree() -> None:
    from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        PublicFormat,
        load_pem_public_key,
    )

    from edge_agent.errors import PackageError
    from edge_agent.package import _raw_ed25519, load_public_key

    private = Ed25519PrivateKey.generate()
    pem = private.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert _raw_ed25519(pem) == raw
    assert _raw_ed25519(pem.replace(b"\n", b"\r\n") + b"\n\n") == raw
    key = load_public_key(pem)
    key.verify(private.sign(b"manifest"), b"manifest")
    assert load_public_key(pem).public_bytes(Encoding.Raw, PublicFormat.Raw) == (
        load_pem_public_key(pem).public_bytes(Encoding.Raw, PublicFormat.Raw)  # type: ignore[union-attr]
    )
    ec = generate_private_key(SECP256R1()).public_key()
    ec_pem = ec.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    assert _raw_ed25519(ec_pem) is None
    with pytest.raises(PackageError, match="expected an ed25519 public key"):
        load_public_key(ec_pem)
    with pytest.raises(PackageError, match="not a PEM public key"):
        load_public_key(pem.replace(b"MCowBQ", b"MCowBR"))
