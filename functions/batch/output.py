"""Where a batch job's results go: predictions, bad rows, telemetry windows.

Predictions are written as they come (CSV, or Parquet when the output ends in
``.parquet``): ``file``, ``row`` (1-based data row of that file),
``prediction_id`` and one column per output value (``scores_0`` ...). Bad rows
go to ``OUTPUT.errors.csv`` with their file, row and reason. Telemetry windows
go to the control plane through a :class:`~edge_agent.reporting.Reporter`, or,
with no server, one JSON line each to ``OUTPUT.telemetry.jsonl``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import IO, Any

import numpy as np

from edge_agent.reporting import Reporter
from functions.batch.readers import BadRow


def sidecar(output: Path, suffix: str) -> Path:
    return output.with_name(output.name + suffix)


class PredictionWriter:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.parquet = path.suffix == ".parquet"
        self._columns: list[str] | None = None
        self._csv: Any = None
        self._handle: IO[str] | None = None
        self._pq: Any = None

    def write(
        self, file: str, rows: np.ndarray, ids: list[str], outputs: dict[str, np.ndarray]
    ) -> None:
        if not len(ids):
            return
        flat = {n: a.reshape(len(ids), -1) for n, a in sorted(outputs.items())}
        columns = [f"{n}_{j}" for n, a in flat.items() for j in range(a.shape[1])]
        values = np.concatenate(list(flat.values()), axis=1) if flat else np.empty((len(ids), 0))
        if self._columns is None:
            self._columns = columns
            if not self.parquet:
                self._handle = self.path.open("w", newline="")
                self._csv = csv.writer(self._handle)
                self._csv.writerow(["file", "row", "prediction_id", *columns])
        if self.parquet:
            self._write_parquet(file, rows, ids, columns, values)
            return
        for number, pid, vals in zip(rows.tolist(), ids, values.tolist(), strict=True):
            self._csv.writerow([file, number, pid, *(f"{v:.7g}" for v in vals)])

    def _write_parquet(
        self, file: str, rows: np.ndarray, ids: list[str], columns: list[str], values: np.ndarray
    ) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table(
            {
                "file": pa.array([file] * len(ids), pa.string()),
                "row": pa.array(rows, pa.int64()),
                "prediction_id": pa.array(ids, pa.string()),
                **{c: pa.array(values[:, j], pa.float32()) for j, c in enumerate(columns)},
            }
        )
        if self._pq is None:
            self._pq = pq.ParquetWriter(self.path, table.schema)
        self._pq.write_table(table)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
        if self._pq is not None:
            self._pq.close()
        if self._columns is None:  # no good row at all: an empty file with the key columns
            if self.parquet:
                import pyarrow as pa
                import pyarrow.parquet as pq

                empty = {"file": pa.string(), "row": pa.int64(), "prediction_id": pa.string()}
                pq.write_table(pa.table({k: pa.array([], t) for k, t in empty.items()}), self.path)
            else:
                self.path.write_text("file,row,prediction_id\n")


class ErrorWriter:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._handle: IO[str] | None = None
        self._csv: Any = None

    def write(self, bad: list[BadRow]) -> None:
        if not bad:
            return
        if self._handle is None:
            self._handle = self.path.open("w", newline="")
            self._csv = csv.writer(self._handle)
            self._csv.writerow(["file", "row", "reason"])
        for row in bad:
            self._csv.writerow([row.file, row.row, row.reason])
        self.count += len(bad)
        self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


class TelemetrySink:
    """Sequences the chunks' windows in input order; to a reporter or a JSON-lines file."""

    def __init__(self, device_id: str, reporter: Reporter | None, path: Path | None) -> None:
        self.device_id = device_id
        self.reporter = reporter
        self.windows = 0
        self._sequence = 0
        self._handle = path.open("w") if path is not None and reporter is None else None

    def put(self, window: dict[str, Any] | None) -> None:
        if window is None:
            return
        window = dict(window, device_id=self.device_id)
        if self.reporter is not None:
            window["sequence"] = self.reporter.next_sequence()
            self.reporter.record_window(window)
        else:
            self._sequence += 1
            window["sequence"] = self._sequence
            assert self._handle is not None
            self._handle.write(json.dumps(window, separators=(",", ":")) + "\n")
        self.windows += 1

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
