"""The manifest as the device reads it: plain typed records, the same schema as the record.

:mod:`edge_agent.core.manifest` (pydantic) is the manifest's validation of
record: the compiler writes packages with it, the control plane validates
uploads and the agent's installer checks installs with it. Importing pydantic
and building those models costs about 70 ms, most of a serverless cold start
(and msgspec, tried first, still costs about 10 ms of imports). This module
reads the same bytes with ``json`` and plain slotted classes that mirror every
model field for field, for :func:`edge_agent.runtime.open_model`, the
serverless handlers and batch scoring.

Why a small reader can agree with pydantic: a package's manifest must be in
canonical form (:func:`canonical_json` of what was parsed equals the signed
bytes), and pydantic fills defaults and coerces values (``1`` to ``1.0``,
``"2"`` to ``2``, ``true`` to ``1``) before that re-serialisation. So every
manifest the record accepts has every field present and every value already of
its declared JSON type; this reader requires exactly that (all fields, no
unknown ones, strict types, the same patterns, bounds and non-empty tuples)
and then the same canonical form. A test feeds both readers every manifest the
compiler writes and a set of malformed ones and checks they agree.

The runtime path is typed with the ``Any*`` unions at the end, so it takes
either reader's objects.
"""

# No ``from __future__ import annotations``: the records' annotations are read as
# objects at run time, and evaluating them from strings costs milliseconds.
import json
import re
import types
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, TypeAlias

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
# Python's ``$`` also matches before a final newline: ``\Z`` is the same anchor.
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z"
MODEL_VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}\Z"
SHA256_PATTERN = r"^[0-9a-f]{64}\Z"


class Pattern:
    def __init__(self, pattern: str) -> None:
        self.regex = re.compile(pattern)


class Ge:
    def __init__(self, bound: int) -> None:
        self.bound = bound


class NonEmpty:
    pass


class ManifestFormatError(ValueError):
    """The bytes are not a manifest; the message names the field (``signature.inputs.0``)."""


class _Record:
    """A frozen record whose fields are its class annotations (in order)."""

    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls) -> None:
        cls._fields = tuple(cls.__dict__.get("__annotations__", {}))

    def __init__(self, **values: Any) -> None:
        for name in self._fields:
            object.__setattr__(self, name, values[name])

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen")

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and all(
            getattr(self, f) == getattr(other, f) for f in self._fields
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        inner = ", ".join(f"{f}={getattr(self, f)!r}" for f in self._fields)
        return f"{type(self).__name__}({inner})"


class Quantization(_Record):
    __slots__ = ("scale", "zero_point")
    scale: float
    zero_point: int


class TensorSpec(_Record):
    __slots__ = (
        "name",
        "runtime_name",
        "dtype",
        "shape",
        "model_dtype",
        "quantization",
        "feature_names",
    )
    name: str
    runtime_name: str
    dtype: DType
    shape: tuple[int, ...]
    model_dtype: DType
    quantization: Quantization | None
    feature_names: tuple[str, ...] | None


class Signature(_Record):
    __slots__ = ("inputs", "outputs", "batch")
    inputs: Annotated[tuple[TensorSpec, ...], NonEmpty()]
    outputs: Annotated[tuple[TensorSpec, ...], NonEmpty()]
    batch: Annotated[int, Ge(1)] | None


class FeatureStats(_Record):
    __slots__ = (
        "name",
        "kind",
        "count",
        "frequencies",
        "edges",
        "categories",
        "mean",
        "std",
        "min",
        "max",
    )
    name: str
    kind: Literal["numeric", "categorical"]
    count: int
    frequencies: tuple[float, ...]
    edges: tuple[float, ...] | None
    categories: tuple[int, ...] | None
    mean: float | None
    std: float | None
    min: float | None
    max: float | None


class TensorStats(_Record):
    __slots__ = ("tensor", "feature_axis", "features", "pad_id", "unknown_id")
    tensor: str
    feature_axis: Literal["element", "channel", "class", "tokens", "mask"]
    features: tuple[FeatureStats, ...]
    pad_id: int | None
    unknown_id: int | None


class ReferenceStats(_Record):
    __slots__ = ("rows", "source", "inputs", "outputs")
    rows: int
    source: str
    inputs: tuple[TensorStats, ...]
    outputs: tuple[TensorStats, ...]


class MetricDelta(_Record):
    __slots__ = ("name", "fp32", "candidate", "delta")
    name: str
    fp32: float
    candidate: float
    delta: float


class FloatNode(_Record):
    __slots__ = ("name", "op", "sensitivity", "added_bytes")
    name: str
    op: str
    sensitivity: float
    added_bytes: int


class FidelityReport(_Record):
    __slots__ = (
        "rows",
        "max_abs_error",
        "mean_abs_error",
        "top1_agreement",
        "metric",
        "passed",
        "reasons",
        "task",
        "measure",
        "relative_error",
        "mean_cosine",
        "p1_cosine",
        "nn_agreement",
        "float_nodes",
    )
    rows: int
    max_abs_error: float
    mean_abs_error: float
    top1_agreement: float | None
    metric: MetricDelta | None
    passed: bool
    reasons: tuple[str, ...]
    task: Task | None
    measure: str | None
    relative_error: float | None
    mean_cosine: float | None
    p1_cosine: float | None
    nn_agreement: float | None
    float_nodes: tuple[FloatNode, ...]


class TestVectors(_Record):
    __test__ = False  # not a pytest class
    __slots__ = ("inputs", "outputs", "atol", "rtol")
    inputs: dict[str, list[Any]]
    outputs: dict[str, list[Any]]
    atol: float
    rtol: float


class DatasetRef(_Record):
    __slots__ = ("role", "name", "sha256", "rows")
    role: Literal["calibration", "validation", "reference", "labels"]
    name: str
    sha256: str
    rows: int


class Lineage(_Record):
    __slots__ = (
        "source_sha256",
        "source_format",
        "datasets",
        "compiler_version",
        "tool_versions",
        "created_by",
        "created_at",
    )
    source_sha256: str
    source_format: Literal["onnx", "torch-export", "torch-state-dict"]
    datasets: tuple[DatasetRef, ...]
    compiler_version: str
    tool_versions: dict[str, str]
    created_by: str
    created_at: str


class Benchmark(_Record):
    __slots__ = ("batch", "latency_ms_p50", "latency_ms_p95", "runs", "threads", "host")
    batch: int
    latency_ms_p50: float
    latency_ms_p95: float
    runs: int
    threads: int
    host: str


class ConfidenceCalibration(_Record):
    __slots__ = ("edges", "hit_rate", "rows", "accuracy", "source")
    edges: tuple[float, ...]
    hit_rate: tuple[float, ...]
    rows: Annotated[int, Ge(1)]
    accuracy: float
    source: str


class ModelFile(_Record):
    __slots__ = ("path", "sha256", "size_bytes")
    path: str
    sha256: Annotated[str, Pattern(SHA256_PATTERN)]
    size_bytes: int


class ProfileRef(_Record):
    __slots__ = ("id", "os", "arch", "accelerator", "cpu_features", "execution_providers")
    id: str
    os: str
    arch: str
    accelerator: str
    cpu_features: tuple[str, ...]
    execution_providers: tuple[str, ...]


class Manifest(_Record):
    __slots__ = (
        "schema_version",
        "package_id",
        "model_name",
        "model_version",
        "release",
        "profile",
        "runtime",
        "format",
        "recipe",
        "task",
        "model_file",
        "signature",
        "reference",
        "fidelity",
        "test_vectors",
        "benchmark",
        "calibration",
        "lineage",
        "key_id",
    )
    schema_version: int
    package_id: str
    model_name: Annotated[str, Pattern(MODEL_NAME_PATTERN)]
    model_version: Annotated[str, Pattern(MODEL_VERSION_PATTERN)]
    release: Annotated[int, Ge(1)]
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
    benchmark: Benchmark | None
    calibration: ConfidenceCalibration | None
    lineage: Lineage
    key_id: str


# -- the reader: one converter per annotation, built on first use

Convert = Callable[[Any, str], Any]
_JSON_TYPES: dict[type, tuple[type, ...]] = {str: (str,), int: (int,), float: (float,)}


def _fail(where: str, message: str) -> ManifestFormatError:
    return ManifestFormatError(f"manifest field {where or 'manifest'}: {message}")


def _scalar(kind: type) -> Convert:
    def convert(value: Any, where: str) -> Any:
        # bool is an int to Python, never to the manifest; ints are not floats (canonical form)
        if type(value) is not kind:
            raise _fail(where, f"expected {kind.__name__}, got {type(value).__name__}")
        return value

    return convert


def _compile(tp: Any) -> Convert:
    """A converter from json.loads output to ``tp``, strict (the canonical form's types)."""
    if tp is str or tp is int or tp is float or tp is bool:
        return _scalar(tp)
    if tp is Any:
        return lambda value, where: value
    if isinstance(tp, type) and issubclass(tp, _Record):
        return _record(tp)
    origin = typing.get_origin(tp)
    if origin is Annotated:
        inner = _compile(tp.__origin__)
        checks = tp.__metadata__
        return lambda value, where: _constrain(inner(value, where), checks, where)
    if origin is Literal:
        allowed = typing.get_args(tp)

        def literal(value: Any, where: str) -> Any:
            if type(value) is not str or value not in allowed:
                raise _fail(
                    where, f"expected one of {', '.join(map(repr, allowed))}, got {value!r}"
                )
            return value

        return literal
    if origin in (types.UnionType, typing.Union):
        (some,) = [a for a in typing.get_args(tp) if a is not type(None)]
        present = _compile(some)
        return lambda value, where: None if value is None else present(value, where)
    if origin is tuple or origin is list:
        item = _compile(typing.get_args(tp)[0])
        make = tuple if origin is tuple else list

        def sequence(value: Any, where: str) -> Any:
            if type(value) is not list:
                raise _fail(where, f"expected an array, got {type(value).__name__}")
            return make(item(v, f"{where}.{i}") for i, v in enumerate(value))

        return sequence
    if origin is dict:
        key, val = (_compile(a) for a in typing.get_args(tp))

        def mapping(value: Any, where: str) -> Any:
            if type(value) is not dict:
                raise _fail(where, f"expected an object, got {type(value).__name__}")
            return {key(k, where): val(v, f"{where}.{k}") for k, v in value.items()}

        return mapping
    raise TypeError(f"no reader for {tp!r}")


def _constrain(value: Any, checks: tuple[Any, ...], where: str) -> Any:
    for check in checks:
        if isinstance(check, Pattern) and not check.regex.search(value):
            raise _fail(where, f"{value!r} does not match {check.regex.pattern!r}")
        if isinstance(check, Ge) and value < check.bound:
            raise _fail(where, f"{value} is less than {check.bound}")
        if isinstance(check, NonEmpty) and not value:
            raise _fail(where, "a model needs at least one tensor here")
    return value


_converters: dict[type, Convert] = {}


def _record(cls: type[_Record]) -> Convert:
    def convert(value: Any, where: str) -> Any:
        fields = _fields_of(cls)
        if type(value) is not dict:
            raise _fail(where, f"expected an object, got {type(value).__name__}")
        if len(value) != len(fields) or value.keys() != fields.keys():
            missing = sorted(fields.keys() - value.keys())
            extra = sorted(value.keys() - fields.keys())
            raise _fail(
                where,
                (f"missing {', '.join(missing)}" if missing else "")
                + ("; " if missing and extra else "")
                + (f"unknown {', '.join(extra)}" if extra else ""),
            )
        prefix = f"{where}." if where else ""
        return cls(**{n: fields[n](value[n], prefix + n) for n in fields})

    return convert


_field_converters: dict[type, dict[str, Convert]] = {}


def _fields_of(cls: type[_Record]) -> dict[str, Convert]:
    found = _field_converters.get(cls)
    if found is None:
        hints = cls.__dict__["__annotations__"]
        found = {name: _compile(hints[name]) for name in cls._fields}
        _field_converters[cls] = found
    return found


def parse_manifest(data: bytes) -> Manifest:
    """The manifest in ``data``, required canonical; ManifestFormatError says what is wrong."""
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestFormatError(f"manifest.json is not JSON: {exc}") from exc
    manifest: Manifest = _record(Manifest)(raw, "")
    try:
        canonical = canonical_json(raw)
    except ValueError as exc:  # NaN or infinity, which canonical JSON cannot hold
        raise ManifestFormatError(f"manifest.json is not in canonical form: {exc}") from exc
    if canonical != data:
        raise ManifestFormatError("manifest.json is not in canonical form")
    return manifest


def to_builtins(value: Any) -> Any:
    """A record as JSON types (what the record's ``model_dump(mode="json")`` gives)."""
    if isinstance(value, _Record):
        return {f: to_builtins(getattr(value, f)) for f in value._fields}
    if isinstance(value, tuple | list):
        return [to_builtins(v) for v in value]
    if isinstance(value, dict):
        return {k: to_builtins(v) for k, v in value.items()}
    return value


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
