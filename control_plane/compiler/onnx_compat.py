"""Write an ONNX model an older onnxruntime can load: IR version and opsets capped.

A hardware profile may say what the oldest runtime it targets loads
(``[runtime] onnx_max_ir_version``, ``onnx_max_opsets``). Lambda's python3.11
runtime (Amazon Linux 2, glibc 2.26) takes only manylinux2014 wheels, and the
newest onnxruntime with such wheels is 1.16.3: ONNX IR <= 9, ai.onnx opset
<= 19, ai.onnx.ml opset <= 3. The compiler's exporter and quantizers write IR
10, ai.onnx 18 and import domains the graph never uses (ai.onnx.ml 5,
com.microsoft, training...). :func:`cap_onnx` turns such a model into one the
older runtime loads, changing the graph only when it must:

1. opset imports of domains no node uses are dropped;
2. a domain above its cap is lowered by relabelling when every op the graph
   uses has the same definition at the cap (nothing changes but the number);
   otherwise ai.onnx goes through ``onnx.version_converter``, and any other
   domain is refused;
3. the IR version is lowered when the model uses nothing newer (IR 10 added
   4-bit types and function overloads, IR 9 the float8 types).

The caller checks the result scores like the original (the compiler compares
them on the validation set; see ``Compiler.run``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from control_plane.errors import CompileError

if TYPE_CHECKING:
    from control_plane.compiler.report import Candidate
    from control_plane.core.hardware import RuntimeSpec

# the tensor types each IR version added (onnx.TensorProto.DataType values)
_TYPES_SINCE_IR = {
    9: {17, 18, 19, 20},  # FLOAT8E4M3FN, FLOAT8E4M3FNUZ, FLOAT8E5M2, FLOAT8E5M2FNUZ
    10: {21, 22},  # UINT4, INT4
}


def _nodes(graph: Any) -> Iterator[Any]:
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.g.node:
                yield from _nodes(attr.g)
            for sub in attr.graphs:
                yield from _nodes(sub)


def _all_nodes(model: Any) -> list[Any]:
    nodes = list(_nodes(model.graph))
    for function in model.functions:
        nodes.extend(function.node)
    return nodes


def _elem_types(model: Any) -> set[int]:
    """Every tensor element type the model declares or holds."""
    import onnx

    found: set[int] = set()
    graphs = [model.graph]
    graphs += [a.g for n in _nodes(model.graph) for a in n.attribute if a.g.node]
    for graph in graphs:
        found.update(t.data_type for t in graph.initializer)
        for value in (*graph.input, *graph.output, *graph.value_info):
            if value.type.HasField("tensor_type"):
                found.add(value.type.tensor_type.elem_type)
    for node in _nodes(model.graph):
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                found.add(attr.t.data_type)
    return found


def _same_definitions(nodes: list[Any], domain: str, current: int, target: int) -> list[str]:
    """The ops of ``domain`` whose definition at opset ``target`` differs from ``current``."""
    import onnx

    changed = []
    for op in sorted({n.op_type for n in nodes if (n.domain or "") == domain}):
        schema_domain = "" if domain == "ai.onnx" else domain
        try:
            now = onnx.defs.get_schema(op, current, schema_domain).since_version
            then = onnx.defs.get_schema(op, target, schema_domain).since_version
        except onnx.defs.SchemaError:
            changed.append(f"{op} (not defined at opset {target})")
            continue
        if now != then:
            changed.append(f"{op} (version {now} at opset {current}, {then} at {target})")
    return changed


def cap_onnx(
    model_bytes: bytes, max_ir_version: int | None, max_opsets: Mapping[str, int]
) -> bytes:
    """``model_bytes`` rewritten to IR <= ``max_ir_version`` and each domain's opset <= its cap.

    Returns the input unchanged when it already fits; raises CompileError naming
    what cannot be expressed for the older runtime.
    """
    import onnx

    model = onnx.load_from_string(model_bytes)
    nodes = _all_nodes(model)
    used = {(n.domain or "") for n in nodes}
    changed = False
    keep = [
        o for o in model.opset_import if (o.domain or "") in ("", "ai.onnx") or o.domain in used
    ]
    if len(keep) != len(model.opset_import):
        del model.opset_import[:]
        model.opset_import.extend(keep)
        changed = True
    for opset in list(model.opset_import):
        domain = opset.domain or ""
        cap = max_opsets.get(domain, max_opsets.get("ai.onnx") if domain == "" else None)
        if cap is None or opset.version <= cap:
            continue
        differs = _same_definitions(nodes, domain, opset.version, cap)
        if not differs:
            opset.version = cap
        elif domain in ("", "ai.onnx"):
            model = _convert(model, cap, differs)
        else:
            raise CompileError(
                f"the model uses {domain} opset {opset.version} ops the target runtime "
                f"(opset <= {cap}) defines differently: {', '.join(differs)}"
            )
        changed = True
    if max_ir_version is not None and model.ir_version > max_ir_version:
        newer = {
            t for ir, types in _TYPES_SINCE_IR.items() if ir > max_ir_version for t in types
        } & _elem_types(model)
        if newer:
            names = ", ".join(onnx.TensorProto.DataType.Name(t) for t in sorted(newer))
            raise CompileError(
                f"the model uses tensor types ({names}) that ONNX IR {max_ir_version} lacks"
            )
        if any(f.overload for f in model.functions):
            raise CompileError(
                f"the model overloads functions, which ONNX IR {max_ir_version} lacks"
            )
        model.ir_version = max_ir_version
        changed = True
    if not changed:
        return model_bytes
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise CompileError(f"the capped model does not check: {exc}") from exc
    data: bytes = model.SerializeToString()
    return data


def _convert(model: Any, cap: int, differs: list[str]) -> Any:
    from onnx import version_converter

    try:
        return version_converter.convert_version(model, cap)
    except Exception as exc:  # the converter raises RuntimeError / ConvertError / others
        raise CompileError(
            f"cannot convert the model to ai.onnx opset {cap} ({', '.join(differs)}): "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
        ) from exc


def opsets_of(model_bytes: bytes) -> tuple[int, dict[str, int]]:
    """(IR version, {domain: opset}) of a serialized model."""
    import onnx

    model = onnx.load_from_string(model_bytes)
    return model.ir_version, {(o.domain or ""): o.version for o in model.opset_import}


def fit_runtime(
    cand: Candidate, runtime: RuntimeSpec, score: Callable[[bytes], Mapping[str, np.ndarray]]
) -> Candidate:
    """``cand`` as the profile's runtime loads it: its ONNX capped to the profile's IR
    version and opsets, checked to score the validation rows as the original did."""
    if cand.format != "onnx" or (
        runtime.onnx_max_ir_version is None and not runtime.onnx_max_opsets
    ):
        return cand
    capped = cap_onnx(cand.model_bytes, runtime.onnx_max_ir_version, runtime.onnx_max_opsets)
    if capped == cand.model_bytes:
        return cand
    outputs = score(capped)
    for name, expected in cand.outputs.items():
        got = outputs.get(name)
        if (
            got is None
            or got.shape != expected.shape
            or not np.allclose(got, expected, rtol=1e-5, atol=1e-6)
        ):
            raise CompileError(
                f"{cand.key}: capped to IR {runtime.onnx_max_ir_version} / opsets "
                f"{dict(runtime.onnx_max_opsets)}, output {name!r} scores differently"
            )
    return replace(cand, model_bytes=capped, outputs=dict(outputs))
