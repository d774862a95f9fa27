"""Hardware profiles: the schema of hardware-profiles/*.toml and its loader.

A profile names one kind of target (os/arch/accelerator, CPU features, the
runtime and its execution providers) and what the compiler may build for it:
the allowed (format, recipe) candidates in order of preference, the opset,
threads, size and memory budgets, and the fidelity budget a candidate must
meet to be packaged.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from control_plane.errors import NotFound, ProfileError
from edge_agent.core.host import HostInfo, profile_mismatches
from edge_agent.core.manifest import Format, ProfileRef, Recipe, RuntimeName

FORMAT_RUNTIME: dict[str, str] = {"onnx": "onnxruntime", "tflite": "litert"}
RECIPES: dict[str, frozenset[str]] = {
    "onnx": frozenset(
        {
            "fp32",
            "fp16",
            "dynamic_int8",
            "dynamic_int8_per_channel",
            "weight_only_int8",
            "mixed_int8",
            "static_int8",
        }
    ),
    "tflite": frozenset({"fp32", "dynamic_int8", "mixed_int8", "static_int8"}),
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Target(_Strict):
    os: Literal["linux", "android", "darwin", "windows"]
    arch: Literal["x86_64", "aarch64", "armv7l"]
    accelerator: str = "none"
    cpu_features: tuple[str, ...] = ()
    soc: str | None = None


class RuntimeSpec(_Strict):
    """``onnx_max_ir_version`` / ``onnx_max_opsets`` (domain -> opset, ``""`` is ai.onnx):
    what the oldest onnxruntime the target runs loads; the compiler caps the chosen
    model to them (control_plane/compiler/onnx_compat.py)."""

    name: RuntimeName
    execution_providers: tuple[str, ...] = ()
    threads: int = Field(default=0, ge=0, le=256)
    onnx_max_ir_version: int | None = Field(default=None, ge=7)
    onnx_max_opsets: dict[str, int] = Field(default_factory=dict)


class Candidate(_Strict):
    format: Format
    recipe: Recipe

    @property
    def key(self) -> str:
        return f"{self.format}/{self.recipe}"


class CompileSpec(_Strict):
    """What to build. ``mixed_int8`` starts from dynamic int8 with per-channel weights and
    keeps the most sensitive weight ops in float until the fidelity budget holds, within
    ``max_tuning_seconds`` and ``max_float_nodes``."""

    opset: int = Field(default=17, ge=13, le=23)
    candidates: tuple[Candidate, ...] = Field(min_length=1)
    io_dtype: Literal["float32", "int8"] = "float32"
    max_tuning_seconds: float = Field(default=60.0, gt=0)
    max_float_nodes: int = Field(default=16, ge=1)


class RegressionBudget(_Strict):
    """Regression: mean |candidate - fp32| over the spread (std) of the fp32 outputs."""

    max_relative_error: float = Field(default=0.02, gt=0, le=1)


class EmbeddingBudget(_Strict):
    """Embeddings: cosine similarity to the fp32 vectors, and whether each validation row's
    nearest neighbour (among the other validation rows) stays the same."""

    min_mean_cosine: float = Field(default=0.99, ge=0, le=1)
    min_p1_cosine: float = Field(default=0.95, ge=0, le=1)
    min_nn_agreement: float = Field(default=0.90, ge=0, le=1)


class Budgets(_Strict):
    """Size and memory, and the fidelity budget of each task kind.

    Classification is judged on ``max_top1_loss`` (and ``max_metric_drop`` of
    accuracy when labels are given); regression on ``regression`` (and
    ``max_metric_drop`` of MAE, relative, with labels); embeddings on ``embedding``.
    """

    max_package_bytes: int = Field(gt=0)
    max_memory_bytes: int = Field(gt=0)
    max_top1_loss: float = Field(default=0.01, ge=0, le=1)
    max_metric_drop: float = Field(default=0.01, ge=0, le=1)
    max_abs_error: float | None = Field(default=None, gt=0)
    regression: RegressionBudget = RegressionBudget()
    embedding: EmbeddingBudget = EmbeddingBudget()


class BenchmarkSpec(_Strict):
    on_host: bool = True
    runs: int = Field(default=50, ge=1)


class HardwareProfile(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,63}$")
    description: str
    target: Target
    runtime: RuntimeSpec
    compile: CompileSpec
    budgets: Budgets
    benchmark: BenchmarkSpec = BenchmarkSpec()

    @model_validator(mode="after")
    def _consistent(self) -> HardwareProfile:
        for i, cand in enumerate(self.compile.candidates):
            if FORMAT_RUNTIME[cand.format] != self.runtime.name:
                raise ValueError(
                    f"compile.candidates.{i}: format {cand.format!r} does not run on "
                    f"runtime {self.runtime.name!r}"
                )
            if cand.recipe not in RECIPES[cand.format]:
                raise ValueError(
                    f"compile.candidates.{i}: recipe {cand.recipe!r} is not available for "
                    f"{cand.format} (choose from {sorted(RECIPES[cand.format])})"
                )
            if self.compile.io_dtype == "int8" and cand.key != "tflite/static_int8":
                raise ValueError(
                    f"compile.candidates.{i}: io_dtype int8 needs tflite/static_int8, "
                    f"not {cand.key}"
                )
        keys = [c.key for c in self.compile.candidates]
        if len(set(keys)) != len(keys):
            raise ValueError("compile.candidates: a candidate is listed twice")
        return self

    def ref(self) -> ProfileRef:
        return ProfileRef(
            id=self.id,
            os=self.target.os,
            arch=self.target.arch,
            accelerator=self.target.accelerator,
            cpu_features=self.target.cpu_features,
            execution_providers=self.runtime.execution_providers,
        )

    def host_mismatches(self, host: HostInfo) -> list[str]:
        """Why this host cannot run (and so cannot benchmark) this target; empty if it can."""
        problems = profile_mismatches(self.ref(), host, self.runtime.name)
        if not self.benchmark.on_host:
            problems.append("the profile says it is never benchmarked on a build host")
        return problems


def load_profile(path: Path) -> HardwareProfile:
    """Parse and validate one profile file; errors name the file and the field."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read: {exc.strerror}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ProfileError(f"{path}: not valid TOML: {exc}") from exc
    try:
        profile = HardwareProfile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(profile)"
        extra = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ProfileError(f"{path}: field {field}: {first['msg']}{extra}") from exc
    if profile.id != path.stem:
        raise ProfileError(f"{path}: field id: {profile.id!r} must match the file name")
    return profile


def builtin_profiles_dir() -> Path:
    """The profiles that ship with Fleetcast.

    In an installed wheel they are package data (``control_plane/hardware_profiles/``,
    see setup.py); in a checkout or an editable install, the top-level
    ``hardware-profiles/`` directory they are built from.
    """
    package = Path(__file__).resolve().parent.parent
    installed = package / "hardware_profiles"
    return installed if installed.is_dir() else package.parent / "hardware-profiles"


def profile_files(directories: Path | Sequence[Path]) -> dict[str, Path]:
    """Profile id -> file over ``directories`` in order; a later directory overrides by id."""
    dirs = [directories] if isinstance(directories, Path) else list(directories)
    files: dict[str, Path] = {}
    for directory in dirs:
        if not directory.is_dir():
            raise NotFound(f"hardware profiles directory {directory} does not exist")
        files.update((f.stem, f) for f in sorted(directory.glob("*.toml")))
    if not files:
        where = ", ".join(str(d) for d in dirs) or "(no directory)"
        raise NotFound(f"no hardware profiles (*.toml) in {where}")
    return dict(sorted(files.items()))


def load_profiles(directories: Path | Sequence[Path]) -> dict[str, HardwareProfile]:
    """Load and validate every profile in ``directories`` (later ones override by id)."""
    return {i: load_profile(f) for i, f in profile_files(directories).items()}


def select_profiles(directories: Path | Sequence[Path], ids: list[str]) -> list[HardwareProfile]:
    """The named profiles (all when ``ids`` is empty or ['all']), in id order."""
    profiles = load_profiles(directories)
    if not ids or ids == ["all"]:
        return list(profiles.values())
    unknown = [i for i in ids if i not in profiles]
    if unknown:
        raise NotFound(
            f"unknown profile(s) {', '.join(unknown)}; known: {', '.join(sorted(profiles))}"
        )
    return [profiles[i] for i in ids]
