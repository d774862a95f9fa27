"""Check scoring requests against a manifest's input signature (pure, numpy only)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal

import numpy as np

from edge_agent.errors import InvalidInput

if TYPE_CHECKING:
    from edge_agent.core.device_manifest import AnySignature, AnyTensorSpec

NanPolicy = Literal["reject", "allow"]


def _check_tensor(spec: AnyTensorSpec, value: object, nan_policy: NanPolicy) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.kind not in "fiub":
        raise InvalidInput(f"input {spec.name!r}: dtype {array.dtype} is not numeric")
    if array.dtype.kind in "iub" and spec.dtype.startswith("float"):
        raise InvalidInput(f"input {spec.name!r}: expected {spec.dtype}, got {array.dtype}")
    if spec.dtype in _INTEGER or spec.dtype == "bool":
        _check_integer(spec, array)
    expected = spec.shape
    if array.ndim == len(expected) - 1:  # a single row without the batch axis
        array = array[np.newaxis, ...]
    if array.ndim != len(expected):
        raise InvalidInput(
            f"input {spec.name!r}: expected rank {len(expected)} shape {list(expected)}, "
            f"got shape {list(array.shape)}"
        )
    for axis, (want, got) in enumerate(zip(expected, array.shape, strict=True)):
        if want != -1 and want != got:
            raise InvalidInput(
                f"input {spec.name!r}: dimension {axis} is {got}, expected {want} "
                f"(shape {list(expected)})"
            )
    if array.shape[0] == 0:
        raise InvalidInput(f"input {spec.name!r}: empty batch")
    array = np.ascontiguousarray(array, dtype=np.dtype(spec.dtype))
    if nan_policy == "reject" and array.dtype.kind == "f" and not np.isfinite(array).all():
        raise_non_finite(spec.name, array)
    return array


_INTEGER = frozenset({"int8", "uint8", "int32", "int64"})


def _check_integer(spec: AnyTensorSpec, array: np.ndarray) -> None:
    """Integer and boolean inputs (token ids, masks, codes) take integers in range only."""
    if array.dtype.kind == "f":
        raise InvalidInput(
            f"input {spec.name!r}: expected {spec.dtype} (ids, codes or a mask), got {array.dtype}"
        )
    if array.size == 0 or array.dtype.kind == "b":
        return
    if spec.dtype == "bool":
        low, high = 0, 1
    else:
        info = np.iinfo(np.dtype(spec.dtype))
        low, high = int(info.min), int(info.max)
    smallest, largest = int(array.min()), int(array.max())
    if smallest < low or largest > high:
        raise InvalidInput(
            f"input {spec.name!r}: values {smallest}..{largest} do not fit {spec.dtype}"
        )


def raise_non_finite(name: str, array: np.ndarray) -> None:
    bad = int(array.size - np.count_nonzero(np.isfinite(array)))
    raise InvalidInput(f"input {name!r}: {bad} NaN or infinite values")


def check_finite(
    arrays: Mapping[str, np.ndarray], summaries: Mapping[str, np.ndarray] | None = None
) -> None:
    """Raise InvalidInput if an input holds NaN or inf.

    ``summaries`` may hold, per input, values computed as sums or means over the
    input's elements (telemetry's feature rows): a finite sum proves its
    elements finite, since NaN and inf propagate through addition. Only when a
    summary is not finite (a bad value, or an overflow) is the input scanned.
    """
    for name, array in arrays.items():
        if array.dtype.kind != "f":
            continue
        summary = summaries.get(name) if summaries is not None else None
        if summary is not None:
            # A few values (the channel sums of a small batch) are added up in
            # Python: numpy's reduction machinery costs more once a large model
            # has pushed it out of the CPU caches. A sum of floats is finite only
            # if every term is; an overflow of the sum only costs the full scan.
            if summary.size <= 64 and summary.ndim == 2:
                if math.isfinite(sum(map(sum, summary.tolist()))):
                    continue
            elif np.isfinite(summary).all():
                continue
        if not np.isfinite(array).all():
            raise_non_finite(name, array)


def validate_inputs(
    signature: AnySignature, inputs: Mapping[str, object], nan_policy: NanPolicy = "reject"
) -> dict[str, np.ndarray]:
    """Return the inputs as contiguous arrays of the declared dtype, or raise InvalidInput.

    A single input model also accepts its one tensor under any name when only
    one is given. A row without the batch axis gets one.
    """
    specs = {spec.name: spec for spec in signature.inputs}
    if len(specs) == 1 and len(inputs) == 1:
        (only,) = specs
        (value,) = inputs.values()
        inputs = {only: value}
    missing = sorted(set(specs) - set(inputs))
    if missing:
        raise InvalidInput(f"missing input(s): {', '.join(missing)}")
    unknown = sorted(set(inputs) - set(specs))
    if unknown:
        raise InvalidInput(f"unknown input(s): {', '.join(unknown)}; expected {sorted(specs)}")
    arrays = {name: _check_tensor(specs[name], inputs[name], nan_policy) for name in specs}
    batches = {array.shape[0] for array in arrays.values()}
    if len(batches) > 1:
        raise InvalidInput(f"inputs disagree on batch size: {sorted(batches)}")
    return arrays


class InputValidator:
    """:func:`validate_inputs` for one signature, with a fast path for the usual request.

    A request whose every input is already a C-contiguous ``np.ndarray`` of the
    declared dtype and shape is accepted after attribute comparisons only (the
    arrays are returned as given, as ``validate_inputs`` would return them);
    anything else goes through ``validate_inputs``, which converts or explains.
    """

    def __init__(self, signature: AnySignature, nan_policy: NanPolicy = "reject") -> None:
        self.signature = signature
        self.nan_policy: NanPolicy = nan_policy
        self._specs = tuple(
            (spec.name, np.dtype(spec.dtype), *_shape_check(spec.shape))
            for spec in signature.inputs
        )
        self._check_nan = nan_policy == "reject"

    def __call__(self, inputs: Mapping[str, object]) -> dict[str, np.ndarray]:
        specs = self._specs
        if len(inputs) == len(specs):
            if len(specs) == 1:
                values: list[object] = list(inputs.values())
            else:
                values = [inputs.get(spec[0]) for spec in specs]
            arrays = {}
            batch = -1
            for (name, dtype, full, tail), value in zip(specs, values, strict=True):
                if (
                    type(value) is not np.ndarray
                    or (value.dtype is not dtype and value.dtype != dtype)
                    or not value.flags.c_contiguous
                    or not (value.shape == full or (tail is not None and value.shape[1:] == tail))
                    or value.shape[0] == 0
                    or (batch != -1 and value.shape[0] != batch)
                ):
                    break
                if self._check_nan and dtype.kind == "f" and not np.isfinite(value).all():
                    raise_non_finite(name, value)
                batch = value.shape[0]
                arrays[name] = value
            else:
                return arrays
        return validate_inputs(self.signature, inputs, self.nan_policy)


def _shape_check(shape: tuple[int, ...]) -> tuple[tuple[int, ...] | None, tuple[int, ...] | None]:
    """The full shape to compare with when every axis is fixed, else the rows' shape when
    only the batch axis is free, else neither (the slow path checks axis by axis)."""
    shape = tuple(shape)
    if -1 not in shape:
        return shape, None
    if shape[0] == -1 and -1 not in shape[1:]:
        return None, shape[1:]
    return None, None
