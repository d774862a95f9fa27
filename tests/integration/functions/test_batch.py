"""Batch scoring on every format, malformed rows, a memory bound, and local vs Dask."""

from __future__ import annotations

import csv
import json
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from functions.batch.job import BadRowError, BatchJob, run_batch

pytestmark = pytest.mark.integration
VOLATILE = ("started_at", "ended_at", "latency_ms")


def _expected(edge_packages: Any, x: np.ndarray) -> np.ndarray:
    from edge_agent.runtime import open_model

    model = open_model(edge_packages.onnx, edge_packages.public_key, telemetry=False)
    return next(iter(model.predict({"input": x}).values()))


def _write_csv(path: Path, x: np.ndarray, bad: dict[int, str] | None = None) -> Path:
    """x as CSV with a header; ``bad`` replaces data row N (1-based) with a raw line."""
    with path.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow([f"f{i}" for i in range(x.shape[1])])
        for number, row in enumerate(x, start=1):
            if bad and number in bad:
                handle.write(bad[number] + "\r\n")
            else:
                out.writerow([f"{v:.6g}" for v in row])
    return path


def _read_predictions(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _job(edge_packages: Any, source: Path, output: Path, **kw: Any) -> BatchJob:
    return BatchJob(edge_packages.onnx, edge_packages.public_key, source, output, **kw)


def _scores(rows: list[dict[str, str]]) -> np.ndarray:
    cols = [c for c in rows[0] if c not in ("file", "row", "prediction_id")]
    return np.array([[float(r[c]) for c in cols] for r in rows], dtype=np.float32)


def test_csv_with_malformed_rows_goes_on_and_reports_each(
    edge_packages: Any, tmp_path: Path
) -> None:
    x = edge_packages.x[:100]
    row = ",".join(["0"] * 64)
    bad = {5: row.replace("0", "x", 1), 17: ",".join(["1"] * 63), 60: "nan," + row[2:]}
    source = _write_csv(tmp_path / "digits.csv", x, bad)
    output = tmp_path / "out.csv"
    summary = run_batch(_job(edge_packages, source, output, chunk_rows=32))
    assert (summary.rows, summary.bad_rows) == (97, 3)
    rows = _read_predictions(output)
    good = [n for n in range(1, 101) if n not in bad]
    assert [int(r["row"]) for r in rows] == good
    assert rows[0]["prediction_id"] == f"{summary.job_id}:0:1"
    np.testing.assert_allclose(
        _scores(rows), _expected(edge_packages, x[np.array(good) - 1]), rtol=1e-4, atol=1e-5
    )
    with (tmp_path / "out.csv.errors.csv").open() as handle:
        errors = list(csv.DictReader(handle))
    assert [(e["file"], int(e["row"])) for e in errors] == [(str(source), n) for n in (5, 17, 60)]
    assert "not a number" in errors[0]["reason"] and "63 columns" in errors[1]["reason"]
    assert "finite" in errors[2]["reason"]
    windows = [json.loads(line) for line in (tmp_path / "out.csv.telemetry.jsonl").open()]
    assert sum(w["rows"] for w in windows) == 97 and [w["sequence"] for w in windows] == [
        1,
        2,
        3,
        4,
    ]

    with pytest.raises(BadRowError, match=r"digits.csv: row 5: not a number"):
        run_batch(_job(edge_packages, source, tmp_path / "ff.csv", chunk_rows=32, fail_fast=True))


def test_parquet_and_npz_and_a_directory(edge_packages: Any, tmp_path: Path) -> None:
    x = edge_packages.x[:50].astype(np.float64)
    columns = {f"f{i}": pa.array(x[:, i]) for i in range(64)}
    f3 = x[:, 3].tolist()
    f3[9] = None  # row 10: a null
    columns["f3"] = pa.array(f3, pa.float64())
    source = tmp_path / "in"
    source.mkdir()
    pq.write_table(pa.table(columns), source / "a.parquet", row_group_size=16)
    x_npz = edge_packages.x[50:90].copy()
    x_npz[7, 0] = np.inf  # row 8
    np.savez_compressed(source / "b.npz", input=x_npz)
    output = tmp_path / "out.parquet"
    summary = run_batch(_job(edge_packages, source, output, chunk_rows=16))
    assert (summary.files, summary.rows, summary.bad_rows) == (2, 88, 2)
    table = pq.read_table(output).to_pylist()
    files = [Path(r["file"]).name for r in table]
    assert files.count("a.parquet") == 49 and files.count("b.npz") == 39
    assert [r["row"] for r in table if r["file"].endswith("b.npz")][6:8] == [7, 9]
    cols = [c for c in table[0] if c.startswith("scores") or c.startswith("output")]
    got = np.array([[r[c] for c in cols] for r in table], dtype=np.float32)
    want_x = np.concatenate([np.delete(x, 9, axis=0), np.delete(x_npz, 7, axis=0)])
    np.testing.assert_allclose(got, _expected(edge_packages, want_x.astype(np.float32)), atol=1e-5)
    errors = (tmp_path / "out.parquet.errors.csv").read_text()
    assert "a.parquet,10," in errors and "b.npz,8," in errors


def test_memory_is_bounded_by_the_chunk_not_the_file(edge_packages: Any, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    base = edge_packages.x

    def source(rows: int) -> Path:
        x = base[rng.integers(0, len(base), rows)]
        return _write_csv(tmp_path / f"big-{rows}.csv", x)

    small, large = source(2_000), source(16_000)  # the large one: 125 chunks of 128 rows
    run_batch(_job(edge_packages, small, tmp_path / "warm.csv", chunk_rows=128))  # load once

    def peak(path: Path) -> int:
        tracemalloc.start()
        try:
            run_batch(_job(edge_packages, path, tmp_path / f"{path.stem}.out.csv", chunk_rows=128))
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    peak_small, peak_large = peak(small), peak(large)
    parsed = 16_000 * 64 * 4  # the large file as one float32 array
    assert peak_large < parsed / 2, (peak_small, peak_large)
    assert peak_large < peak_small * 1.25 + 256 * 1024, (peak_small, peak_large)  # 8x the rows


def test_dask_local_cluster_gives_the_local_results_and_telemetry(
    edge_packages: Any, tmp_path: Path
) -> None:
    x = edge_packages.x[:300]
    source = tmp_path / "in"
    source.mkdir()
    _write_csv(source / "a.csv", x[:150], {40: "oops"})
    np.savez(source / "b.npz", input=x[150:])
    local = run_batch(_job(edge_packages, source, tmp_path / "local.csv", chunk_rows=32))
    on_dask = run_batch(
        _job(edge_packages, source, tmp_path / "dask.csv", chunk_rows=32, dask="local:2")
    )
    assert on_dask.workers == 2
    assert sorted(on_dask.extra["loads_per_worker"].values()) == [1, 1]  # once per worker
    assert (local.rows, local.bad_rows, local.windows) == (
        on_dask.rows,
        on_dask.bad_rows,
        on_dask.windows,
    )
    assert (tmp_path / "local.csv").read_text() == (tmp_path / "dask.csv").read_text()
    assert (tmp_path / "local.csv.errors.csv").read_text() == (
        tmp_path / "dask.csv.errors.csv"
    ).read_text()

    def windows(name: str) -> list[dict[str, Any]]:
        lines = (tmp_path / f"{name}.csv.telemetry.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(w).items() if k not in VOLATILE} for w in lines]

    assert windows("local") == windows("dask") and len(windows("local")) == local.windows


def test_the_cli_scores_and_names_a_malformed_row(edge_packages: Any, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from control_plane.cli import cli

    source = _write_csv(tmp_path / "d.csv", edge_packages.x[:20], {3: "1,2"})
    args = [
        "batch",
        "score",
        "--package",
        str(edge_packages.onnx),
        "--public-key",
        str(edge_packages.public_key),
        "--input",
        str(source),
        "--output",
        str(tmp_path / "p.csv"),
        "--chunk-rows",
        "8",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["rows"], summary["bad_rows"]) == (19, 1)
    failed = CliRunner().invoke(cli, [*args, "--fail-fast"])
    assert failed.exit_code == 1 and "d.csv: row 3: 2 columns, expected 64" in failed.output
