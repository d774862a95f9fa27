"""A container's alias: where the split comes from, and which version answers each request."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from edge_agent.errors import PackageError
from functions.alias import Route, pick_route, resolve
from functions.core import FunctionConfig, FunctionCore


def _binomial_bounds(n: int, p: float, z: float = 4.0) -> tuple[float, float]:
    """n*p ± z standard deviations: a deterministic hash that misses this is not uniform."""
    sd = math.sqrt(n * p * (1 - p))
    return n * p - z * sd, n * p + z * sd


def test_the_pick_is_deterministic_per_request_id_and_follows_the_shares() -> None:
    routes = (Route("7", 90, Path("a")), Route("8", 10, Path("b")))
    n = 20_000
    picks = [pick_route(routes, f"req-{i}", "fn:live") for i in range(n)]
    low, high = _binomial_bounds(n, 0.10)
    assert low <= picks.count(1) <= high
    assert picks == [pick_route(routes, f"req-{i}", "fn:live") for i in range(n)]  # same ids
    assert [pick_route(routes, f"req-{i}", "fn:live") for i in range(50)] != [
        pick_route(routes, f"req-{i}", "other:live") for i in range(50)
    ]  # another alias cuts the ids differently
    assert pick_route((Route("7", 100, Path("a")),), "any") == 0


def test_routes_from_the_environment_match_packages_by_version(
    edge_packages: Any, tmp_path: Path
) -> None:
    (tmp_path / "v1.fcpkg").write_bytes(edge_packages.onnx.read_bytes())
    v2 = edge_packages.variant("alias-v2", model_version="2", release=2)
    (tmp_path / "v2.fcpkg").write_bytes(v2.read_bytes())
    env = {
        "FLEETCAST_ALIAS": "fn:live",
        "FLEETCAST_ALIAS_ROUTES": json.dumps({"1": 70, "2": 30}),
        "FLEETCAST_PACKAGES_DIR": str(tmp_path),
    }
    assignment = resolve(env, tmp_path)
    assert assignment.source == "env"
    assert [(r.version, r.percent, r.package.name) for r in assignment.routes] == [
        ("1", 70, "v1.fcpkg"),
        ("2", 30, "v2.fcpkg"),
    ]
    with pytest.raises(
        PackageError, match=r"version 3 \(FLEETCAST_ALIAS_ROUTES\).*found versions \['1', '2'\]"
    ):
        resolve({**env, "FLEETCAST_ALIAS_ROUTES": '{"1": 50, "3": 50}'}, tmp_path)
    with pytest.raises(PackageError, match="sum to 90"):
        resolve({**env, "FLEETCAST_ALIAS_ROUTES": '{"1": 60, "2": 30}'}, tmp_path)


def test_a_table_file_with_a_split_and_the_old_one_package_form(
    edge_packages: Any, tmp_path: Path
) -> None:
    v2 = edge_packages.variant("table-v2", model_version="2", release=2)
    table = tmp_path / "aliases.json"
    table.write_text(
        json.dumps(
            {
                "fn:live": {
                    "routes": {"1": 90, "2": 10},
                    "packages": {"1": str(edge_packages.onnx), "2": str(v2)},
                },
                "fn:old": str(edge_packages.onnx),
            }
        )
    )
    split = resolve({"FLEETCAST_ALIAS": "fn:live", "FLEETCAST_ALIAS_FILE": str(table)}, tmp_path)
    assert [(r.version, r.percent) for r in split.routes] == [("1", 90), ("2", 10)]
    single = resolve({"FLEETCAST_ALIAS": "fn:old", "FLEETCAST_ALIAS_FILE": str(table)}, tmp_path)
    assert single.routes == (Route(None, 100, edge_packages.onnx),)
    with pytest.raises(PackageError, match="'fn:new' is not in"):
        resolve({"FLEETCAST_ALIAS": "fn:new", "FLEETCAST_ALIAS_FILE": str(table)}, tmp_path)


def test_a_split_core_answers_with_the_version_it_picked_and_counts_each(
    edge_packages: Any, tmp_path: Path
) -> None:
    v2 = edge_packages.variant("core-v2", model_version="2", release=2)
    routes = (Route("1", 50, edge_packages.onnx), Route("2", 50, v2))
    core = FunctionCore(
        FunctionConfig(edge_packages.onnx, edge_packages.public_key, routes=routes, alias="fn:a")
    )
    row = {"instances": [[float(v) for v in edge_packages.x[0]]]}
    served = [core.predict({**row, "request_id": f"r{i}"})["model"]["version"] for i in range(40)]
    assert set(served) == {"1", "2"}
    assert served == [core.predict(row, f"r{i}")["model"]["version"] for i in range(40)]
    counted = {m.manifest.model_version: m.telemetry.pending_requests() for m in core.models}  # type: ignore[union-attr]
    assert counted == {"1": 2 * served.count("1"), "2": 2 * served.count("2")}


def test_a_split_refuses_a_package_of_another_version(edge_packages: Any) -> None:
    routes = (Route("1", 50, edge_packages.onnx), Route("2", 50, edge_packages.onnx))
    with pytest.raises(PackageError, match="holds version 1, the alias routes 50% to version 2"):
        FunctionCore(FunctionConfig(edge_packages.onnx, edge_packages.public_key, routes=routes))
