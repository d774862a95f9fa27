"""The manifest as the device reads it: msgspec structs, the same schema as the record.

:mod:`edge_agent.core.manifest` (pydantic) is the manifest's validation of
record: the compiler writes packages with it, the control plane validates
uploads and the agent's installer checks installs with it. Importing pydantic
and building those models costs about 70 ms, which is most of a serverless
cold start. This module reads the same bytes with msgspec structs that mirror
every model field for field (unknown fields forbidden, the same patterns,
bounds and non-empty tuples), for :func:`edge_agent.runtime.open_model`, the
serverless handlers and batch scoring. Both readers then require the manifest
to be in canonical form (:func:`canonical_json` of what was parsed equals the
signed bytes), so they accept and refuse the same manifests; a test feeds both
every manifest the compiler writes and a set of malformed ones.

The runtime path is typed with the ``Any*`` unions below, so the runtime
takes either form.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias

import msgspec

if TYPE_CHECKING:
    from edge_agent.core import manifest as record

SCHEMA_VERSION = 1

Format = Literal["onnx", "tflite"]
Recipe = Literal[
    "fp32",
    "fp16",
    "dynamic_int8",
    "dynamic_int8_per_channel",
    "weight_only_int8",
    "mixed_int8",
    "static_int8",
]
RuntimeName = Literal["onnxruntime", "litert"]
Task = Literal["classification", "regression", "embedding"]
DType = Literal["float32", "float16", "int8", "uint8", "int32", "int64", "bool"]

# pydantic's patterns run on Rust's regex, where ``$`` is the end of the text;
# msgspec's on Python's ``re.search``, where it would also match before a final
# newline: ``\Z`` is the same anchor there.
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z"
MODEL_VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}\Z"
SHA256_PATTERN = r"^[0-9a-f]{64}\Z"


class _Strict(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    pass


class Quantization(_Strict, frozen=True):
    scale: float
    zero_point: int


class TensorSpec(_Strict, frozen=True):
    name: str
    runtime_name: str
    shape: tuple[int, ...]
    dtype: DType = "float32"
    model_dtype: DType = "float32"
    quantization: Quantization | None = None
    feature_names: tuple[str, ...] | None = None


class Signature(_Strict, frozen=True):
    inputs: Annotated[tuple[TensorSpec, ...], msgspec.Meta(min_length=1)]
    outputs: Annotated[tuple[TensorSpec, ...], msgspec.Meta(min_length=1)]
    batch: Annotated[int, msgspec.Meta(ge=1)] | None = None


class FeatureStats(_Strict, frozen=True):
    name: str
    kind: Literal["numeric", "categorical"]
    count: int
    frequencies: tuple[float, ...]
    edges: tuple[float, ...] | None = None
    categories: tuple[int, ...] | None = None
    mean: float | None = None
    std: float | None = None
    min: float | None = None
    max: float | None = None


class TensorStats(_Strict, frozen=True):
    tensor: str
    feature_axis: Literal["element", "channel", "class", "tokens", "mask"]
    features: tuple[FeatureStats, ...]
    pad_id: int | None = None
    unknown_id: int | None = None


class ReferenceStats(_Strict, frozen=True):
    rows: int
    source: str
    inputs: tuple[TensorStats, ...]
    outputs: tuple[TensorStats, ...]


class MetricDelta(_Strict, frozen=True):
    name: str
    fp32: float
    candidate: float
    delta: float


class FloatNode(_Strict, frozen=True):
    name: str
    op: str
    sensitivity: float
    added_bytes: int


class FidelityReport(_Strict, frozen=True):
    rows: int
    max_abs_error: float
    mean_abs_error: float
    passed: bool
    top1_agreement: float | None = None
    metric: MetricDelta | None = None
    reasons: tuple[str, ...] = ()
    task: Task | None = None
    measure: str | None = None
    relative_error: float | None = None
    mean_cosine: float | None = None
    p1_cosine: float | None = None
    nn_agreement: float | None = None
    float_nodes: tuple[FloatNode, ...] = ()


class TestVectors(_Strict, frozen=True):
    __test__ = False  # not a pytest class

    inputs: dict[str, list[Any]]
    outputs: dict[str, list[Any]]
    atol: float
    rtol: float


class DatasetRef(_Strict, frozen=True):
    role: Literal["calibration", "validation", "reference", "labels"]
    name: str
    sha256: str
    rows: int


class Lineage(_Strict, frozen=True):
    source_sha256: str
    source_format: Literal["onnx", "torch-export", "torch-state-dict"]
    datasets: tuple[DatasetRef, ...]
    compiler_version: str
    tool_versions: dict[str, str]
    created_by: str
    created_at: str


class Benchmark(_Strict, frozen=True):
    batch: int
    latency_ms_p50: float
    latency_ms_p95: float
    runs: int
    threads: int
    host: str


class ModelFile(_Strict, frozen=True):
    path: str
    sha256: Annotated[str, msgspec.Meta(pattern=SHA256_PATTERN)]
    size_bytes: int


class ProfileRef(_Strict, frozen=True):
    id: str
    os: str
    arch: str
    accelerator: str
    cpu_features: tuple[str, ...]
    execution_providers: tuple[str, ...] = ()


class Manifest(_Strict, frozen=True):
    package_id: str
    model_name: Annotated[str, msgspec.Meta(pattern=MODEL_NAME_PATTERN)]
    model_version: Annotated[str, msgspec.Meta(pattern=MODEL_VERSION_PATTERN)]
    release: Annotated[int, msgspec.Meta(ge=1)]
    profile: ProfileRef
    runtime: RuntimeName
    format: Format
    recipe: Recipe
    task: Task
    model_file: ModelFile
    signature: Signature
    reference: ReferenceStats
    fidelity: FidelityReport
    test_vectors: TestVectors
    lineage: Lineage
    key_id: str
    schema_version: int = SCHEMA_VERSION
    benchmark: Benchmark | None = None

    def canonical_bytes(self) -> bytes:
        return canonical_json(msgspec.to_builtins(self))


_decoder = msgspec.json.Decoder(Manifest)


class ManifestFormatError(ValueError):
    """The bytes are not a manifest; the message names the field (``$.release``)."""


def parse_manifest(data: bytes) -> Manifest:
    """The manifest in ``data``, required canonical; ManifestFormatError says what is wrong."""
    try:
        manifest = _decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise ManifestFormatError(f"manifest field {exc}") from exc
    except msgspec.DecodeError as exc:
        raise ManifestFormatError(f"manifest.json is not JSON: {exc}") from exc
    try:
        canonical = manifest.canonical_bytes()
    except ValueError as exc:  # NaN or infinity, which canonical JSON cannot hold
        raise ManifestFormatError(f"manifest.json is not in canonical form: {exc}") from exc
    if canonical != data:
        raise ManifestFormatError("manifest.json is not in canonical form")
    return manifest


def canonical_json(obj: Any) -> bytes:
    """Serialise ``obj`` the one way that is signed: sorted keys, no spaces, UTF-8."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


# The runtime path takes either reader's objects (attribute for attribute the same).
if TYPE_CHECKING:
    AnyManifest: TypeAlias = Manifest | record.Manifest
    AnySignature: TypeAlias = Signature | record.Signature
    AnyTensorSpec: TypeAlias = TensorSpec | record.TensorSpec
    AnyTensorStats: TypeAlias = TensorStats | record.TensorStats
    AnyFeatureStats: TypeAlias = FeatureStats | record.FeatureStats
    AnyProfileRef: TypeAlias = ProfileRef | record.ProfileRef
