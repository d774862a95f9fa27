"""The package manifest: what a .fcpkg promises about the model inside it.

The manifest is signed as canonical JSON (sorted keys, no whitespace, UTF-8), so
the control plane that writes it and the agent that checks it agree on bytes.
This module is pure: no file or network I/O. It is the validation of record;
:mod:`edge_agent.core.device_manifest` reads the same bytes without pydantic for
the device's runtime path (see there).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# one definition of the literals and of the signed form, shared with the device reader
from edge_agent.core.device_manifest import SCHEMA_VERSION as SCHEMA_VERSION
from edge_agent.core.device_manifest import DType as DType
from edge_agent.core.device_manifest import Format as Format
from edge_agent.core.device_manifest import Recipe as Recipe
from edge_agent.core.device_manifest import RuntimeName as RuntimeName
from edge_agent.core.device_manifest import Task as Task
from edge_agent.core.device_manifest import canonical_json as canonical_json


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Quantization(_Strict):
    """Affine quantization of an int8/uint8 tensor at the model boundary."""

    scale: float
    zero_point: int


class TensorSpec(_Strict):
    """One input or output as callers see it.

    ``name`` is the public name callers use; ``runtime_name`` the name inside the
    model file (LiteRT renames tensors on conversion). ``shape`` uses -1 for a
    dimension of any size (the batch). ``dtype`` is what callers pass or get;
    ``model_dtype`` and ``quantization`` describe the tensor inside the file
    when the runtime converts at the boundary (full-int8 TFLite).
    """

    name: str
    runtime_name: str
    dtype: DType = "float32"
    shape: tuple[int, ...]
    model_dtype: DType = "float32"
    quantization: Quantization | None = None
    feature_names: tuple[str, ...] | None = None


class Signature(_Strict):
    """The model's tensors. ``batch`` is set when the model file only scores that many
    rows per call (a fixed-batch export): the runtime then splits a request into calls
    of ``batch`` rows, padding the last call by repeating its final row, and returns
    only the requested rows."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    batch: int | None = Field(default=None, ge=1)

    @field_validator("inputs", "outputs")
    @classmethod
    def _not_empty(cls, value: tuple[TensorSpec, ...]) -> tuple[TensorSpec, ...]:
        if not value:
            raise ValueError("a model needs at least one tensor here")
        return value


class FeatureStats(_Strict):
    """Reference distribution of one feature: fixed bins for drift tests.

    ``numeric``: ``edges`` has len(frequencies)+1 entries; the outer bins are
    open (values below the first edge count in bin 0, above the last in the
    last bin). ``categorical``: ``categories`` lists the values, one
    frequency each.
    """

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


class TensorStats(_Strict):
    """Statistics of one tensor: how its features were cut, and each feature's bins.

    ``tokens`` (integer id sequences): per row the sequence length (ids other than
    ``pad_id``), the share of padding and, when ``unknown_id`` is known, the share of
    unknown ids. ``mask`` (attention masks): per row the number of positions set.
    """

    tensor: str
    feature_axis: Literal["element", "channel", "class", "tokens", "mask"]
    features: tuple[FeatureStats, ...]
    pad_id: int | None = None
    unknown_id: int | None = None


class ReferenceStats(_Strict):
    rows: int
    source: str
    inputs: tuple[TensorStats, ...]
    outputs: tuple[TensorStats, ...]


class MetricDelta(_Strict):
    name: str
    fp32: float
    candidate: float
    delta: float


class FloatNode(_Strict):
    """A node mixed precision kept in float, and what keeping it cost and bought."""

    name: str
    op: str
    sensitivity: float  # local relative output error of the node when quantized
    added_bytes: int  # model size over the node's int8 version


class FidelityReport(_Strict):
    """How far a candidate strays from the fp32 reference on held-out data.

    ``measure`` names the figure the budget was judged on (it depends on the task):
    top-1 agreement (classification), relative error (regression), mean cosine and
    nearest-neighbour agreement (embedding).
    """

    rows: int
    max_abs_error: float
    mean_abs_error: float
    top1_agreement: float | None = None
    metric: MetricDelta | None = None
    passed: bool
    reasons: tuple[str, ...] = ()
    task: Task | None = None
    measure: str | None = None
    relative_error: float | None = None
    mean_cosine: float | None = None
    p1_cosine: float | None = None
    nn_agreement: float | None = None
    float_nodes: tuple[FloatNode, ...] = ()


class TestVectors(_Strict):
    """Inputs with the outputs this very package produced at compile time."""

    __test__ = False  # not a pytest class

    inputs: dict[str, list[Any]]
    outputs: dict[str, list[Any]]
    atol: float
    rtol: float


class DatasetRef(_Strict):
    role: Literal["calibration", "validation", "reference", "labels"]
    name: str
    sha256: str
    rows: int


class Lineage(_Strict):
    source_sha256: str
    source_format: Literal["onnx", "torch-export", "torch-state-dict"]
    datasets: tuple[DatasetRef, ...]
    compiler_version: str
    tool_versions: dict[str, str]
    created_by: str
    created_at: str


class Benchmark(_Strict):
    batch: int
    latency_ms_p50: float
    latency_ms_p95: float
    runs: int
    threads: int
    host: str


class ModelFile(_Strict):
    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int


class ProfileRef(_Strict):
    """The hardware profile the package was built for, as the agent checks it."""

    id: str
    os: str
    arch: str
    accelerator: str
    cpu_features: tuple[str, ...]
    execution_providers: tuple[str, ...] = ()


class ConfidenceCalibration(_Strict):
    """How often a prediction with a given top score was right on the compile's labelled
    validation data, by top-score bin (histogram binning): what the control plane's
    estimated accuracy (CBPE-style) reads. Absent when the compile had no labels."""

    edges: tuple[float, ...]
    hit_rate: tuple[float, ...]
    rows: int = Field(ge=1)
    accuracy: float  # on those rows, for reference
    source: str  # the labelled data set


class Manifest(_Strict):
    schema_version: int = SCHEMA_VERSION
    package_id: str
    model_name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
    model_version: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
    release: int = Field(ge=1)
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
    benchmark: Benchmark | None = None
    calibration: ConfidenceCalibration | None = None
    lineage: Lineage
    key_id: str

    def canonical_bytes(self) -> bytes:
        return canonical_json(self.model_dump(mode="json"))

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        return cls.model_validate_json(data)


def make_package_id(model_name: str, model_version: str, profile_id: str, release: int) -> str:
    return f"{model_name}-{model_version}-{profile_id}-r{release}"
