"""Telemetry windows decoded at ingest, their captured predictions, and feedback labels.

Captured samples are sealed at rest: a capture's inputs and outputs are written
as one AES-256-GCM envelope (``control_plane/crypto.py``) bound to the row's
``device_id/prediction_id``, in the ``outputs_json`` column as
``{"sealed_v1": {"key_id": …, "data": base64}}`` (the key id per row lets the
sample key rotate); :func:`capture_from_row` opens it, so every reader
(``captures``, ``version_captures``) gets the clear sample. Rows written before
sealing (plain outputs JSON) still read.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from control_plane.core.sketches import merge_histogram_sections, merge_latency
from control_plane.crypto import SampleKeyring
from control_plane.store.records import (
    FeedbackLabel,
    NewWindow,
    StoredCapture,
    StoredWindow,
)
from control_plane.store.sql.base import (
    Database,
    Row,
    Tx,
    dumps,
    loads,
    time_range,
    where_clause,
)

CHUNK = 500  # ids per IN (...) list
# windows per INSERT statement (18 parameters each), the statements batched by the driver:
# fewer statements for psycopg to send and PostgreSQL to run, still under the 50 parameters
# psycopg caches a statement's conversion for (measured: ~4 us of ingest CPU a window less)
WINDOW_ROWS = 2


SEALED = "sealed_v1"


def _aad(device_id: str, prediction_id: str) -> bytes:
    return f"capture/{device_id}/{prediction_id}".encode()


def seal_capture(
    keys: SampleKeyring,
    device_id: str,
    prediction_id: str,
    inputs: Any,
    outputs: Any,
) -> str:
    """The ``outputs_json`` value of a capture: its inputs and outputs, sealed."""
    plain = json.dumps({"inputs": inputs, "outputs": outputs}, sort_keys=True).encode()
    key_id, sealed = keys.seal(plain, _aad(device_id, prediction_id))
    return dumps({SEALED: {"key_id": key_id, "data": base64.b64encode(sealed).decode()}})


def open_capture(
    keys: SampleKeyring, device_id: str, prediction_id: str, stored: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(inputs, outputs) of a stored capture (a row from before sealing: no inputs)."""
    value = loads(stored)
    envelope = value.get(SEALED) if isinstance(value, dict) and len(value) == 1 else None
    if not isinstance(envelope, dict):
        return {}, value
    plain = keys.open(
        str(envelope["key_id"]),
        base64.b64decode(envelope["data"]),
        _aad(device_id, prediction_id),
    )
    sample = json.loads(plain)
    return dict(sample["inputs"]), dict(sample["outputs"])


def insert_windows(
    tx: Tx,
    windows: Sequence[tuple[str, int, NewWindow]],
    at: float,
    keys: SampleKeyring,
    per_statement: int = WINDOW_ROWS,
) -> None:
    """Index windows new to the store (the caller stored their raw uploads in the same
    transaction): batched INSERTs for the windows (``per_statement`` rows each), one for
    their captures."""
    if not windows:
        return
    packages: dict[str, Row | None] = {}  # package id -> catalog row, once per call
    for _, _, window in windows:
        pid = window.package_id
        if pid is not None and pid not in packages:
            packages[pid] = tx.row(
                "SELECT sha256, profile_id FROM packages WHERE package_id = ?"
                " ORDER BY created_at DESC LIMIT 1",
                [pid],
            )
    rows: list[list[object]] = []
    captures: list[list[object]] = []
    for device_id, seq, window in windows:
        package = None if window.package_id is None else packages[window.package_id]
        sha256 = None if package is None else package["sha256"]
        rows.append(
            [
                device_id,
                seq,
                window.model_name,
                window.model_version,
                window.package_id,
                sha256,
                None if package is None else package["profile_id"],
                window.started_at,
                window.ended_at,
                window.bucket_start,
                window.requests,
                window.rows,
                window.errors,
                window.invalid,
                window.histograms_json,
                window.latency_json,
                at,
                window.alias,
            ]
        )
        captures += [
            [c.prediction_id, device_id, seq, window.model_name, window.model_version, sha256,
             c.at, seal_capture(keys, device_id, c.prediction_id, dict(c.inputs),
                                dict(c.outputs)), "{}"]
            for c in window.captures
        ]  # fmt: skip
    insert = (
        "INSERT INTO telemetry_windows (device_id, seq, model_name, model_version, package_id,"
        " package_sha256, profile_id, started_at, ended_at, bucket_start, requests,"
        " rows_scored, errors, invalid, histograms_json, latency_json, received_at, alias)"
        " VALUES "
    )
    marks = "(" + ", ".join("?" * 18) + ")"
    conflict = " ON CONFLICT (device_id, seq) DO NOTHING"
    n = per_statement
    whole = len(rows) - len(rows) % n
    tx.execute_many(
        insert + ", ".join([marks] * n) + conflict,
        [[p for r in rows[i : i + n] for p in r] for i in range(0, whole, n)],
    )
    tx.execute_many(insert + marks + conflict, rows[whole:])
    tx.execute_many(
        "INSERT INTO captures (prediction_id, device_id, seq, model_name, model_version,"
        " package_sha256, at, outputs_json, inputs_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (prediction_id, device_id) DO NOTHING",
        captures,
    )


class SqlMonitoringRepo:
    def __init__(self, db: Database, keys: SampleKeyring) -> None:
        self.db = db
        self.keys = keys

    def windows(
        self,
        *,
        model_name: str,
        model_version: str | None = None,
        device_id: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[StoredWindow]:
        conds, params = where_clause(
            {"model_name": model_name, "model_version": model_version, "device_id": device_id},
            time_range("started_at", since, until),
        )
        sql = "SELECT * FROM telemetry_windows" + conds
        with self.db.transaction() as tx:
            rows = tx.rows(sql, params)
            rollups = tx.rows(sql.replace("telemetry_windows", "telemetry_rollups", 1), params)
        found = [_window(r) for r in rows] + [_rollup(r) for r in rollups]
        return sorted(found, key=lambda w: (w.started_at, w.device_id, w.seq))

    def window_counts(self) -> dict[tuple[str, str], tuple[int, int]]:
        with self.db.transaction() as tx:
            rows = tx.rows(
                "SELECT model_name, model_version, COUNT(*) AS n, SUM(rows_scored) AS r"
                " FROM telemetry_windows GROUP BY model_name, model_version"
            )
            rows += tx.rows(
                "SELECT model_name, model_version, SUM(windows) AS n, SUM(rows_scored) AS r"
                " FROM telemetry_rollups GROUP BY model_name, model_version"
            )
        out: dict[tuple[str, str], tuple[int, int]] = {}
        for r in rows:
            key = (r["model_name"], r["model_version"])
            n, total = out.get(key, (0, 0))
            out[key] = (n + int(r["n"]), total + int(r["r"]))
        return out

    def received(self, *, model_name: str, device_id: str, since: float) -> list[StoredWindow]:
        conds, params = where_clause(
            {"model_name": model_name, "device_id": device_id},
            time_range("received_at", since, None),
        )
        with self.db.transaction() as tx:
            rows = tx.rows("SELECT * FROM telemetry_windows" + conds, params)
            rollups = tx.rows("SELECT * FROM telemetry_rollups" + conds, params)
        found = [_window(r) for r in rows] + [_rollup(r) for r in rollups]
        return sorted(found, key=lambda w: (w.started_at, w.seq))

    def reporting_devices(self, since: float) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        with self.db.transaction() as tx:
            for table in ("telemetry_windows", "telemetry_rollups"):
                for r in tx.rows(
                    f"SELECT DISTINCT model_name, device_id FROM {table} WHERE started_at >= ?",
                    [since],
                ):  # table is one of two literals
                    out.setdefault(r["model_name"], set()).add(r["device_id"])
        return out

    def downsample(
        self, before: float, bucket_seconds: float, limit: int = 5000
    ) -> tuple[int, int]:
        if bucket_seconds <= 0:
            raise ValueError(f"bucket_seconds {bucket_seconds}: expected > 0")
        with self.db.transaction() as tx:
            rows = tx.rows(
                "SELECT * FROM telemetry_windows WHERE started_at < ?"
                " ORDER BY started_at, device_id, seq LIMIT ?",
                [before, limit],
            )
            groups: dict[tuple[str, str, float], list[StoredWindow]] = {}
            for w in map(_window, rows):
                bucket = math.floor(w.started_at / bucket_seconds) * bucket_seconds
                groups.setdefault((w.device_id, _package_key(w), bucket), []).append(w)
            for (device_id, key, bucket), windows in groups.items():
                old = tx.row(
                    "SELECT * FROM telemetry_rollups WHERE device_id = ? AND package_key = ?"
                    " AND bucket_start = ?",
                    [device_id, key, bucket],
                )
                parts = ([] if old is None else [_rollup(old)]) + windows
                _write_rollup(tx, key, bucket, bucket_seconds, parts)
                for w in windows:
                    tx.execute(
                        "DELETE FROM telemetry_windows WHERE device_id = ? AND seq = ?",
                        [w.device_id, w.seq],
                    )
        return len(rows), len(groups)

    def drop_rollups(self, before: float) -> int:
        with self.db.transaction() as tx:
            return tx.execute(
                "DELETE FROM telemetry_rollups WHERE bucket_start + bucket_seconds <= ?", [before]
            )

    def captures(self, prediction_ids: Sequence[str]) -> list[StoredCapture]:
        return [capture_from_row(r, self.keys) for r in self._by_ids("captures", prediction_ids)]

    def version_captures(
        self, model_name: str, model_version: str, since: float | None = None
    ) -> list[StoredCapture]:
        sql = "SELECT * FROM captures WHERE model_name = ? AND model_version = ?"
        params: list[object] = [model_name, model_version]
        if since is not None:
            sql += " AND at > ?"
            params.append(since)
        with self.db.transaction() as tx:
            rows = tx.rows(sql + " ORDER BY at", params)
        return [capture_from_row(r, self.keys) for r in rows]

    def put_feedback(self, labels: Sequence[FeedbackLabel]) -> None:
        with self.db.transaction() as tx:
            for label in labels:
                tx.execute(
                    "INSERT INTO feedback (prediction_id, label, received_at, actor)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (prediction_id) DO UPDATE SET"
                    " label = excluded.label, received_at = excluded.received_at,"
                    " actor = excluded.actor",
                    [label.prediction_id, label.label, label.received_at, label.actor],
                )

    def feedback(self, prediction_ids: Sequence[str]) -> list[FeedbackLabel]:
        return [
            FeedbackLabel(
                r["prediction_id"], float(r["label"]), float(r["received_at"]), r["actor"]
            )
            for r in self._by_ids("feedback", prediction_ids)
        ]

    def _by_ids(self, table: str, ids: Sequence[str]) -> list[Row]:
        unique = sorted(set(ids))
        rows: list[Row] = []
        with self.db.transaction() as tx:
            for i in range(0, len(unique), CHUNK):
                part = unique[i : i + CHUNK]
                marks = ", ".join("?" * len(part))
                rows += tx.rows(
                    f"SELECT * FROM {table} WHERE prediction_id IN ({marks})", part
                )  # table is one of two literals above
        return rows


def _window(row: Row) -> StoredWindow:
    return StoredWindow(
        device_id=row["device_id"],
        seq=int(row["seq"]),
        model_name=row["model_name"],
        model_version=row["model_version"],
        package_id=row["package_id"],
        package_sha256=row["package_sha256"],
        profile_id=row["profile_id"],
        started_at=float(row["started_at"]),
        ended_at=float(row["ended_at"]),
        bucket_start=float(row["bucket_start"]),
        requests=int(row["requests"]),
        rows=int(row["rows_scored"]),
        errors=int(row["errors"]),
        invalid=int(row["invalid"]),
        histograms=loads(row["histograms_json"]),
        latency=loads(row["latency_json"]),
        received_at=float(row["received_at"]),
        alias=row["alias"],
    )


def _package_key(w: StoredWindow) -> str:
    key = "\x1f".join((w.model_name, w.model_version, w.package_sha256 or w.package_id or ""))
    return key if w.alias is None else f"{key}\x1f{w.alias}"  # aliases merge apart


def _write_rollup(
    tx: Tx, key: str, bucket: float, bucket_seconds: float, parts: Sequence[StoredWindow]
) -> None:
    """Upsert the merge of ``parts`` (one device, package and bucket) as one rollup row."""
    first = parts[0]
    tx.execute(
        "INSERT INTO telemetry_rollups (device_id, package_key, bucket_start, bucket_seconds,"
        " model_name, model_version, package_id, package_sha256, profile_id, started_at,"
        " ended_at, windows, requests, rows_scored, errors, invalid, histograms_json,"
        " latency_json, received_at, alias) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
        " ?, ?, ?, ?, ?) ON CONFLICT (device_id, package_key, bucket_start) DO UPDATE SET"
        " started_at = excluded.started_at, ended_at = excluded.ended_at,"
        " windows = excluded.windows, requests = excluded.requests,"
        " rows_scored = excluded.rows_scored, errors = excluded.errors,"
        " invalid = excluded.invalid, histograms_json = excluded.histograms_json,"
        " latency_json = excluded.latency_json, received_at = excluded.received_at",
        [
            first.device_id,
            key,
            bucket,
            bucket_seconds,
            first.model_name,
            first.model_version,
            first.package_id,
            first.package_sha256,
            first.profile_id,
            min(p.started_at for p in parts),
            max(p.ended_at for p in parts),
            sum(p.merged for p in parts),
            sum(p.requests for p in parts),
            sum(p.rows for p in parts),
            sum(p.errors for p in parts),
            sum(p.invalid for p in parts),
            dumps(merge_histogram_sections(p.histograms for p in parts)),
            dumps(merge_latency(p.latency for p in parts)),
            max(p.received_at for p in parts),
            first.alias,
        ],
    )


def _rollup(row: Row) -> StoredWindow:
    """A rollup row as a window: ``seq`` 0, ``merged`` the windows it holds."""
    window = _window({**row, "seq": 0})
    return replace(window, merged=int(row["windows"]), bucket_seconds=float(row["bucket_seconds"]))


def capture_from_row(row: Row, keys: SampleKeyring) -> StoredCapture:
    """A capture as read: sealed inputs and outputs opened (a row from before sealing keeps
    its plain outputs, and its inputs in ``inputs_json`` when it has them)."""
    inputs, outputs = open_capture(
        keys, row["device_id"], row["prediction_id"], row["outputs_json"]
    )
    if not inputs:
        inputs = loads(row["inputs_json"] or "{}")
    return StoredCapture(
        prediction_id=row["prediction_id"],
        device_id=row["device_id"],
        seq=int(row["seq"]),
        model_name=row["model_name"],
        model_version=row["model_version"],
        package_sha256=row["package_sha256"],
        at=float(row["at"]),
        outputs=outputs,
        inputs=inputs,
    )
