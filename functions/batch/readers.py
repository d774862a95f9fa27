"""Read batch inputs in bounded chunks: CSV, Parquet (pyarrow) and npz.

Every reader yields :class:`Chunk` s of at most ``chunk_rows`` rows, with the
rows that could not be read as :class:`BadRow` s naming the file and the row
(1-based, data rows; a CSV header is not counted), so nothing is dropped in
silence. Memory is bounded by the chunk, whatever the file's size: CSV is
parsed line by line, Parquet read one record batch at a time, and an npz
member streamed from the zip without loading the array.
"""

from __future__ import annotations

import csv
import math
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_agent.core.manifest import TensorSpec

SUFFIXES = (".csv", ".parquet", ".npz")


class BatchInputError(Exception):
    """An input that cannot be read at all (not a malformed row: a wrong file)."""


@dataclass(frozen=True)
class BadRow:
    file: str
    row: int
    reason: str


@dataclass
class Chunk:
    """Rows of one file: ``rows[i]`` is data row ``first_rows[i]`` (1-based) of ``file``."""

    file: str
    file_index: int
    index: int
    rows: np.ndarray
    row_numbers: np.ndarray
    bad: list[BadRow] = field(default_factory=list)


def input_files(path: Path) -> list[Path]:
    """``path`` itself, or the CSV/Parquet/npz files under a directory, sorted."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES and p.is_file())
        if not files:
            raise BatchInputError(f"{path}: no {', '.join(SUFFIXES)} files")
        return files
    if not path.exists():
        raise BatchInputError(f"{path}: no such file or directory")
    if path.suffix not in SUFFIXES:
        raise BatchInputError(f"{path}: unsupported format (expected {', '.join(SUFFIXES)})")
    return [path]


class _Chunker:
    """Collects good rows and bad rows into chunks of ``size`` rows."""

    def __init__(self, file: str, file_index: int, spec: TensorSpec, size: int) -> None:
        self.file, self.file_index, self.size = file, file_index, size
        self.row_shape = tuple(spec.shape[1:])
        self.width = math.prod(self.row_shape)
        self.dtype = np.dtype(spec.dtype)
        self.index = 0
        self._reset()

    def _reset(self) -> None:
        self.rows = np.empty((self.size, self.width), dtype=self.dtype)
        self.numbers = np.empty(self.size, dtype=np.int64)
        self.count = 0
        self.bad: list[BadRow] = []

    def add(self, number: int, values: np.ndarray) -> Chunk | None:
        self.rows[self.count] = values
        self.numbers[self.count] = number
        self.count += 1
        return self.take() if self.count == self.size else None

    def add_bad(self, number: int, reason: str) -> Chunk | None:
        self.bad.append(BadRow(self.file, number, reason))
        return self.take() if len(self.bad) >= self.size else None

    def add_many(self, first_number: int, block: np.ndarray) -> Iterator[Chunk]:
        """Rows ``first_number``, ``first_number + 1``, ... of a 2-D block (vectorised)."""
        numbers = np.arange(first_number, first_number + len(block), dtype=np.int64)
        finite = (
            np.isfinite(block).all(axis=1)
            if block.dtype.kind == "f"
            else np.ones(len(block), dtype=bool)
        )
        for i in np.flatnonzero(~finite):
            problem = _check(block[i]) or "not a finite number"
            out = self.add_bad(int(numbers[i]), problem)
            if out is not None:
                yield out
        good, good_numbers = block[finite], numbers[finite]
        pos = 0
        while pos < len(good):
            take = min(self.size - self.count, len(good) - pos)
            self.rows[self.count : self.count + take] = good[pos : pos + take]
            self.numbers[self.count : self.count + take] = good_numbers[pos : pos + take]
            self.count += take
            pos += take
            if self.count == self.size:
                out = self.take()
                if out is not None:
                    yield out

    def take(self) -> Chunk | None:
        if not self.count and not self.bad:
            return None
        rows = self.rows[: self.count].reshape((self.count, *self.row_shape))
        chunk = Chunk(
            self.file, self.file_index, self.index, rows, self.numbers[: self.count], self.bad
        )
        self.index += 1
        self._reset()
        return chunk


def _check(values: np.ndarray) -> str | None:
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        bad = int(np.flatnonzero(~np.isfinite(values))[0])
        return f"value {bad + 1} is not a finite number"
    return None


def read_csv(path: Path, file_index: int, spec: TensorSpec, size: int) -> Iterator[Chunk]:
    chunker = _Chunker(str(path), file_index, spec, size)
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        number = 0
        for line_number, record in enumerate(reader, start=1):
            if not record or (len(record) == 1 and not record[0].strip()):
                continue  # a blank line is not a row
            if line_number == 1 and record and not _numeric(record[0]):
                continue  # the header
            number += 1
            if len(record) != chunker.width:
                out = chunker.add_bad(
                    number, f"{len(record)} columns, expected {chunker.width} (line {line_number})"
                )
            else:
                try:
                    values = np.array(record, dtype=np.float64).astype(chunker.dtype)
                    problem = _check(values)
                except ValueError as exc:
                    problem = f"not a number: {exc} (line {line_number})"
                out = chunker.add_bad(number, problem) if problem else chunker.add(number, values)
            if out is not None:
                yield out
    last = chunker.take()
    if last is not None:
        yield last


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_parquet(path: Path, file_index: int, spec: TensorSpec, size: int) -> Iterator[Chunk]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    chunker = _Chunker(str(path), file_index, spec, size)
    parquet = pq.ParquetFile(path)
    names = parquet.schema_arrow.names
    single_list = len(names) == 1 and pa.types.is_list(parquet.schema_arrow.field(0).type)
    if not single_list and len(names) != chunker.width:
        raise BatchInputError(
            f"{path}: {len(names)} columns; expected {chunker.width} numeric columns "
            f"or one list column"
        )
    number = 0
    for batch in parquet.iter_batches(batch_size=size):
        if not single_list:  # numeric columns; a null becomes NaN and is reported
            try:
                matrix = np.column_stack(
                    [
                        batch.column(i).to_numpy(zero_copy_only=False).astype(np.float64)
                        for i in range(len(names))
                    ]
                )
            except (ValueError, TypeError) as exc:
                raise BatchInputError(f"{path}: columns are not numeric: {exc}") from exc
            yield from chunker.add_many(number + 1, matrix)
            number += len(matrix)
            continue
        for values in batch.column(0).to_pylist():
            number += 1
            try:
                array = np.asarray(values, dtype=np.float64)
                if array.shape != (chunker.width,):
                    raise ValueError(f"{array.size} values, expected {chunker.width}")
                problem = _check(array)
            except (ValueError, TypeError) as exc:
                problem = str(exc)
            out = chunker.add_bad(number, problem) if problem else chunker.add(number, array)
            if out is not None:
                yield out
    last = chunker.take()
    if last is not None:
        yield last


def read_npz(path: Path, file_index: int, spec: TensorSpec, size: int) -> Iterator[Chunk]:
    """The member named after the input (or the only member), streamed in chunks."""
    chunker = _Chunker(str(path), file_index, spec, size)
    with zipfile.ZipFile(path) as archive:
        members = [n for n in archive.namelist() if n.endswith(".npy")]
        wanted = f"{spec.name}.npy"
        member = wanted if wanted in members else (members[0] if len(members) == 1 else None)
        if member is None:
            raise BatchInputError(f"{path}: no array {spec.name!r} (has {members})")
        with archive.open(member) as handle:
            version = np.lib.format.read_magic(handle)
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, fortran, dtype = read_header(handle)
            if fortran or dtype.hasobject:
                raise BatchInputError(f"{path}:{member}: Fortran-order or object arrays")
            if tuple(shape[1:]) != chunker.row_shape and math.prod(shape[1:]) != chunker.width:
                raise BatchInputError(
                    f"{path}:{member}: rows of shape {list(shape[1:])}, "
                    f"expected {list(chunker.row_shape)}"
                )
            row_bytes = dtype.itemsize * chunker.width
            number = 0
            while number < shape[0]:
                want = min(size, shape[0] - number)
                data = handle.read(want * row_bytes)
                block = np.frombuffer(data, dtype=dtype).reshape(-1, chunker.width)
                yield from chunker.add_many(number + 1, block)
                number += len(block)
                if len(block) < want:
                    raise BatchInputError(f"{path}:{member}: truncated after row {number}")
    last = chunker.take()
    if last is not None:
        yield last


def read_chunks(path: Path, file_index: int, spec: TensorSpec, size: int) -> Iterator[Chunk]:
    reader = {".csv": read_csv, ".parquet": read_parquet, ".npz": read_npz}[path.suffix]
    return reader(path, file_index, spec, size)
