"""Load what the compiler starts from: a model (ONNX or PyTorch) and .npz data sets.

Every failure here is an :class:`InvalidInput` or :class:`CompileError` whose
message names the file, the tensor and what is wrong with it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import logging
import os
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from control_plane.errors import CompileError, InvalidInput

logger = logging.getLogger(__name__)

SourceKind = Literal["onnx", "torch-export", "torch-state-dict"]


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[int, ...]  # -1 for a dynamic dimension
    dtype: str = "float32"  # float32, int64, int32, bool, ...


@dataclass
class SourceModel:
    """The fp32 reference every candidate is built from and compared with."""

    kind: SourceKind
    path: Path
    sha256: str
    onnx_bytes: bytes
    inputs: list[InputSpec]
    output_names: list[str]
    torch_module: Any | None = None  # torch.nn.Module, for the TFLite path
    batch: int | None = None  # the fixed batch of the model file, None when any batch scores
    note: str | None = None  # what loading changed (a .pt2 re-exported with a dynamic batch)
    _converted: Any | None = field(default=None, repr=False)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Capture what tool chains print (Python and C++ alike) into the debug log.

    litert-torch, ai-edge-quantizer and the ONNX exporter write progress to
    fds 1 and 2; that chatter must not mix with our output (``--json``).
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            with (
                contextlib.redirect_stdout(io.StringIO()) as out,
                contextlib.redirect_stderr(io.StringIO()) as err,
            ):
                yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            sink.seek(0)
            chatter = sink.read().decode("utf-8", "replace") + out.getvalue() + err.getvalue()
            if chatter.strip():
                logger.debug("tool chain output:\n%s", chatter)


# ---------------------------------------------------------------- data sets


def load_npz(path: Path, role: str) -> dict[str, np.ndarray]:
    """Arrays of an .npz (or a single .npy) file; refuses pickles and non-numeric data."""
    try:
        loaded = np.load(path, allow_pickle=False)
    except FileNotFoundError as exc:
        raise InvalidInput(f"{role} data {path}: no such file") from exc
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise InvalidInput(f"{role} data {path}: not a numpy .npz/.npy file ({exc})") from exc
    if isinstance(loaded, np.ndarray):
        arrays = {"input": loaded}
    else:
        with loaded:
            try:
                arrays = {name: loaded[name] for name in loaded.files}
            except ValueError as exc:
                raise InvalidInput(f"{role} data {path}: {exc}") from exc
    if not arrays:
        raise InvalidInput(f"{role} data {path}: holds no arrays")
    return arrays


def check_data(
    arrays: Mapping[str, np.ndarray], specs: list[InputSpec], role: str, path: Path
) -> dict[str, np.ndarray]:
    """Match arrays to the model's inputs; check dtype, shape and finiteness; cast to float32."""
    names = [s.name for s in specs]
    if len(specs) == 1 and len(arrays) == 1:
        arrays = {names[0]: next(iter(arrays.values()))}
    missing = [n for n in names if n not in arrays]
    if missing:
        raise InvalidInput(
            f"{role} data {path}: no array for model input(s) {', '.join(missing)} "
            f"(file has {', '.join(sorted(arrays))})"
        )
    checked: dict[str, np.ndarray] = {}
    rows: set[int] = set()
    for spec in specs:
        array = arrays[spec.name]
        _check_kind(array, spec, role, path)
        if array.ndim != len(spec.shape) or any(
            want not in (-1, got)
            for want, got in zip(spec.shape[1:], array.shape[1:], strict=False)
        ):
            want = ["N", *("?" if d == -1 else str(d) for d in spec.shape[1:])]
            raise InvalidInput(
                f"{role} data {path}: input {spec.name!r} has shape {list(array.shape)}, "
                f"the model takes [{', '.join(want)}]"
            )
        if array.shape[0] == 0:
            raise InvalidInput(f"{role} data {path}: input {spec.name!r} has no rows")
        if array.dtype.kind == "f":
            bad = int(np.count_nonzero(~np.isfinite(array)))
            if bad:
                raise InvalidInput(
                    f"{role} data {path}: input {spec.name!r} contains {bad} NaN or infinite values"
                )
        rows.add(array.shape[0])
        checked[spec.name] = np.ascontiguousarray(array, dtype=np.dtype(spec.dtype))
    if len(rows) > 1:
        raise InvalidInput(f"{role} data {path}: inputs disagree on the number of rows {rows}")
    return checked


def _check_kind(array: np.ndarray, spec: InputSpec, role: str, path: Path) -> None:
    """Float inputs take floats; integer inputs (ids, codes) integers that fit; masks 0/1."""
    want = np.dtype(spec.dtype)
    if want.kind == "f":
        if array.dtype.kind != "f":
            raise InvalidInput(
                f"{role} data {path}: input {spec.name!r} has dtype {array.dtype}, "
                f"the model takes floating point ({spec.dtype})"
            )
        return
    if array.dtype.kind not in "iub":
        raise InvalidInput(
            f"{role} data {path}: input {spec.name!r} has dtype {array.dtype}, the model "
            f"takes {spec.dtype} (token ids, codes or a mask: pass integers)"
        )
    if array.size == 0 or array.dtype.kind == "b":
        return
    low, high = (0, 1) if want.kind == "b" else (int(np.iinfo(want).min), int(np.iinfo(want).max))
    if int(array.min()) < low or int(array.max()) > high:
        raise InvalidInput(
            f"{role} data {path}: input {spec.name!r} holds values "
            f"{int(array.min())}..{int(array.max())} outside {spec.dtype}"
        )


def load_labels(path: Path, rows: int) -> np.ndarray:
    arrays = load_npz(path, "labels")
    if len(arrays) != 1:
        raise InvalidInput(f"labels {path}: expected one array, found {', '.join(arrays)}")
    labels = next(iter(arrays.values()))
    if labels.shape[0] != rows:
        raise InvalidInput(f"labels {path}: {labels.shape[0]} labels for {rows} validation rows")
    if labels.dtype.kind not in "iuf":
        raise InvalidInput(f"labels {path}: dtype {labels.dtype} is not numeric")
    return labels


# ---------------------------------------------------------------- models


def _onnx_inputs(model: Any) -> tuple[list[InputSpec], list[str]]:
    initializers = {init.name for init in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        import onnx

        dims = value.type.tensor_type.shape.dim
        shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in dims)
        elem = value.type.tensor_type.elem_type
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem)).name
        specs.append(InputSpec(value.name, shape, "bool" if dtype == "bool" else dtype))
    return specs, [o.name for o in model.graph.output]


def load_onnx(path: Path) -> SourceModel:
    import onnx

    try:
        model = onnx.load_model(str(path))
        onnx.checker.check_model(model)
    except FileNotFoundError as exc:
        raise InvalidInput(f"model {path}: no such file") from exc
    except Exception as exc:  # DecodeError, ValidationError: the file is no ONNX model
        raise InvalidInput(f"model {path}: not a valid ONNX model ({exc})") from exc
    inputs, outputs = _onnx_inputs(model)
    if not inputs:
        raise InvalidInput(f"model {path}: the graph has no inputs")
    return SourceModel(
        batch=fixed_batch(inputs, path),
        kind="onnx",
        path=path,
        sha256=sha256_file(path),
        onnx_bytes=model.SerializeToString(),
        inputs=inputs,
        output_names=outputs,
    )


def fixed_batch(inputs: list[InputSpec], path: Path) -> int | None:
    """The batch every input fixes, or None when the batch is dynamic."""
    batches = {spec.shape[0] for spec in inputs if spec.shape}
    if not batches or batches == {-1}:
        return None
    if len(batches) > 1:
        raise InvalidInput(
            f"model {path}: inputs disagree on the batch dimension ({sorted(batches)})"
        )
    return int(batches.pop())


def _program_batch(program: Any) -> int | None:
    """The batch a torch.export program was traced with when it is static, else None."""
    names = set(program.graph_signature.user_inputs)
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in names:
            value = node.meta.get("val")
            shape = getattr(value, "shape", None)
            if shape is not None and len(shape) and isinstance(shape[0], int):
                return int(shape[0])
    return None


def _load_module(path: Path, factory: str | None) -> tuple[Any, SourceKind]:
    import torch

    if path.suffix == ".pt2":
        try:
            program = torch.export.load(str(path))
        except FileNotFoundError as exc:
            raise InvalidInput(f"model {path}: no such file") from exc
        except Exception as exc:  # zipfile/pickle/serialisation errors
            raise InvalidInput(f"model {path}: not a torch.export program ({exc})") from exc
        return program, "torch-export"
    if factory is None:
        raise InvalidInput(
            f"model {path}: a state_dict needs --factory module:function that builds the module"
        )
    module_name, _, attr = factory.partition(":")
    try:
        builder = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise InvalidInput(f"factory {factory!r}: cannot import ({exc})") from exc
    module = builder()
    try:
        weights = torch.load(str(path), map_location="cpu", weights_only=True)
        module.load_state_dict(weights)
    except FileNotFoundError as exc:
        raise InvalidInput(f"model {path}: no such file") from exc
    except Exception as exc:  # unpickling errors, missing/unexpected keys
        raise InvalidInput(f"model {path}: not a state_dict for {factory} ({exc})") from exc
    return module, "torch-state-dict"


def torch_input_names(calibration: Mapping[str, np.ndarray]) -> list[str]:
    return list(calibration) if len(calibration) > 1 else ["input"]


def load_torch(
    path: Path,
    factory: str | None,
    calibration: Mapping[str, np.ndarray],
    opset: int,
    data_path: Path,
) -> SourceModel:
    """Load a torch model and export it to the fp32 ONNX reference (dynamic batch)."""
    import torch

    module, kind = _load_module(path, factory)
    # an ExportedProgram is exported as it was traced; a state_dict model scores in eval mode
    program = module if kind == "torch-export" else None
    if program is not None:
        module = program.module()
    else:
        module.eval()
    names = torch_input_names(calibration)
    arrays = list(calibration.values())
    dtypes = [_torch_dtype(a) for a in arrays]
    for name, array in zip(names, arrays, strict=True):
        if array.dtype.kind not in "fiub":
            raise InvalidInput(
                f"calibration data {data_path}: input {name!r} has dtype {array.dtype}, "
                "expected floating point, integers (ids, codes) or bool (a mask)"
            )
    # a program traced with a static batch scores that batch only: it is re-exported with
    # a dynamic batch where its graph allows, else the compiler feeds it chunks of that
    # many rows and the package declares it (the runtime splits requests)
    batch = _program_batch(program) if program is not None else None
    note = None
    if program is not None and batch is not None:
        rebatched, note = dynamic_batch(program, arrays, dtypes, batch)
        if rebatched is not None:
            program, module, batch = rebatched, rebatched.module(), None
    rows = batch or 2
    sample = tuple(
        torch.from_numpy(np.ascontiguousarray(a[:rows], dtype=np.dtype(d)))
        for a, d in zip(arrays, dtypes, strict=True)
    )
    if sample[0].shape[0] < rows:
        raise InvalidInput(
            f"calibration data {data_path}: the model has a fixed batch of {rows}, "
            f"the data only {sample[0].shape[0]} rows"
        )
    try:  # a plain forward pass tells a data shape that does not fit from an export failure
        with torch.no_grad():
            module(*sample)
    except Exception as exc:
        shapes = ", ".join(
            f"{n!r} shaped {['N', *a.shape[1:]]}" for n, a in zip(names, arrays, strict=True)
        )
        raise InvalidInput(
            f"calibration data {data_path}: input {shapes} does not fit the model: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
        ) from exc
    onnx_bytes = export_onnx(program if program is not None else module, sample, names, opset, path)
    import onnx

    model = onnx.load_model_from_string(onnx_bytes)
    inputs, outputs = _onnx_inputs(model)
    fixed = fixed_batch(inputs, path)
    if fixed is not None and fixed != batch:
        raise CompileError(
            f"model {path}: the ONNX export fixed the batch at {fixed}; export the program "
            "with a dynamic batch (torch.export.Dim)"
        )
    return SourceModel(
        kind=kind,
        path=path,
        sha256=sha256_file(path),
        onnx_bytes=onnx_bytes,
        inputs=[InputSpec(n, s.shape, d) for n, s, d in zip(names, inputs, dtypes, strict=True)],
        output_names=outputs,
        torch_module=module,
        batch=batch,
        note=note,
    )


def dynamic_batch(
    program: Any, arrays: list[np.ndarray], dtypes: list[str], batch: int
) -> tuple[Any | None, str]:
    """``program`` (traced at a static ``batch``) re-exported with a dynamic batch, or None,
    with a line saying which and why.

    The saved program's guards pin the traced batch; its module without them
    (``module(check_guards=False)``) is exported again with ``torch.export.Dim`` on every
    input's first dimension. That fails where the graph baked the batch into constants
    (a transformer's Reshape to [1, tokens, heads, d]), and a graph that exports but mixes
    rows (a constant broadcast over the batch) is caught by the check: 2 x batch rows
    scored at once must give what the original gives in two calls of ``batch`` rows.
    """
    import torch

    rows = 2 * batch
    if arrays[0].shape[0] < rows:
        return None, f"fixed batch {batch}: fewer than {rows} calibration rows to check a re-export"
    sample = tuple(
        torch.from_numpy(np.ascontiguousarray(a[:rows], dtype=np.dtype(d)))
        for a, d in zip(arrays, dtypes, strict=True)
    )
    dim = torch.export.Dim("batch", min=1, max=65536)
    try:
        with quiet_stdout():
            rebatched = torch.export.export(
                program.module(check_guards=False),
                sample,
                dynamic_shapes=tuple({0: dim} for _ in sample),
            )
            with torch.no_grad():
                new = rebatched.module()(*sample)
                old = [program.module()(*(t[i : i + batch] for t in sample)) for i in (0, batch)]
    except Exception as exc:  # torch.export: the graph fixes the batch
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return None, f"fixed batch {batch}: cannot re-export with a dynamic batch ({first[:200]})"
    new_out = new if isinstance(new, torch.Tensor) else new[0]
    old_out = torch.cat([o if isinstance(o, torch.Tensor) else o[0] for o in old])
    scale = float(old_out.abs().max()) or 1.0
    if new_out.shape != old_out.shape or not torch.allclose(
        new_out, old_out, atol=1e-5 * scale, rtol=1e-4
    ):
        return None, f"fixed batch {batch}: a dynamic-batch re-export scores rows differently"
    return rebatched, f"re-exported with a dynamic batch (the program was traced at batch {batch})"


def _torch_dtype(array: np.ndarray) -> str:
    """The dtype a torch model takes for data of this kind: float32, int64 or bool."""
    return {"f": "float32", "b": "bool"}.get(array.dtype.kind, "int64")


def export_onnx(
    module: Any, sample: tuple[Any, ...], names: list[str], opset: int, path: Path
) -> bytes:
    import onnx
    import torch

    batch = torch.export.Dim("batch", min=1, max=65536)
    # an ExportedProgram keeps the dynamic dimensions it was traced with
    dynamic = (
        None
        if isinstance(module, torch.export.ExportedProgram)
        else tuple({0: batch} for _ in sample)
    )
    with tempfile.TemporaryDirectory() as tmp, quiet_stdout():
        target = Path(tmp) / "model.onnx"
        try:
            torch.onnx.export(
                module,
                sample,
                str(target),
                input_names=names,
                output_names=["output"],
                opset_version=max(opset, 18),
                dynamo=True,
                dynamic_shapes=dynamic,
                optimize=True,
                verbose=False,
            )
        except Exception as exc:  # torch.export / onnx errors of many kinds
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CompileError(
                f"model {path}: cannot export to ONNX with inputs shaped "
                f"{[list(s.shape) for s in sample]}: {first}"
            ) from exc
        model = onnx.load_model(str(target))
    return bytes(model.SerializeToString())


def torch_module_for(source: SourceModel) -> Any:
    """A torch module for the TFLite path; ONNX sources go through onnx2torch.

    The graph is first simplified with the inputs fixed at the shape TFLite is
    converted for (batch 1, or the model's fixed batch), so shape arithmetic folds
    into constants that onnx2torch and torch.export can take.
    """
    if source.torch_module is not None:
        return source.torch_module
    if source._converted is None:
        batch = source.batch or 1
        shapes = {s.name: (batch, *s.shape[1:]) for s in source.inputs if -1 not in s.shape[1:]}
        from control_plane.compiler.onnx_torch import onnx_to_torch

        source._converted = onnx_to_torch(source.onnx_bytes, source.path, shapes)
    return source._converted
