"""Telemetry windows decoded at ingest, their captured predictions, and feedback labels.

Captured samples are sealed at rest: a capture's inputs and outputs are written
as one AES-256-GCM envelope (``control_plane/crypto.py``) bound to the row's
``device_id/prediction_id``, in the ``outputs_json`` column as
``{"sealed_v1": {"key_id": …, "data": base64}}`` (the key id per row lets the
sample key rotate); :func:`_capture` opens it, so every reader
(``captures``, ``version_captures``) gets the clear sample. Rows written before
sealing (plain outputs JSON) still read.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

from control_plane.crypto import SampleKeyring
from control_plane.store.records import (
    FeedbackLabel,
    NewWindow,
    StoredCapture,
    StoredWindow,
)
from control_plane.store.sql.base import Database, Row, Tx, dumps, loads

CHUNK = 500  # ids per IN (...) list


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


def insert_window(
    tx: Tx, device_id: str, seq: int, window: NewWindow, at: float, keys: SampleKeyring
) -> None:
    """Index one window (the caller stored its raw upload in the same transaction)."""
    package = None
    if window.package_id is not None:
        package = tx.row(
            "SELECT sha256, profile_id FROM packages WHERE package_id = ?"
            " ORDER BY created_at DESC LIMIT 1",
            [window.package_id],
        )
    sha256 = None if package is None else package["sha256"]
    tx.execute(
        "INSERT INTO telemetry_windows (device_id, seq, model_name, model_version, package_id,"
        " package_sha256, profile_id, started_at, ended_at, bucket_start, requests,"
        " rows_scored, errors, invalid, histograms_json, latency_json, received_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (device_id, seq) DO NOTHING",
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
            dumps(dict(window.histograms)),
            dumps(dict(window.latency)),
            at,
        ],
    )
    for capture in window.captures:
        tx.execute(
            "INSERT INTO captures (prediction_id, device_id, seq, model_name, model_version,"
            " package_sha256, at, outputs_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (prediction_id, device_id) DO NOTHING",
            [
                capture.prediction_id,
                device_id,
                seq,
                window.model_name,
                window.model_version,
                sha256,
                capture.at,
                seal_capture(
                    keys,
                    device_id,
                    capture.prediction_id,
                    dict(capture.inputs),
                    dict(capture.outputs),
                ),
            ],
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
        sql = "SELECT * FROM telemetry_windows WHERE model_name = ?"
        params: list[object] = [model_name]
        if model_version is not None:
            sql += " AND model_version = ?"
            params.append(model_version)
        if device_id is not None:
            sql += " AND device_id = ?"
            params.append(device_id)
        if since is not None:
            sql += " AND started_at >= ?"
            params.append(since)
        if until is not None:
            sql += " AND started_at < ?"
            params.append(until)
        with self.db.transaction() as tx:
            rows = tx.rows(sql + " ORDER BY started_at, device_id, seq", params)
        return [_window(r) for r in rows]

    def window_counts(self) -> dict[tuple[str, str], tuple[int, int]]:
        with self.db.transaction() as tx:
            rows = tx.rows(
                "SELECT model_name, model_version, COUNT(*) AS n, SUM(rows_scored) AS r"
                " FROM telemetry_windows GROUP BY model_name, model_version"
            )
        return {(r["model_name"], r["model_version"]): (int(r["n"]), int(r["r"])) for r in rows}

    def captures(self, prediction_ids: Sequence[str]) -> list[StoredCapture]:
        return [_capture(r, self.keys) for r in self._by_ids("captures", prediction_ids)]

    def version_captures(self, model_name: str, model_version: str) -> list[StoredCapture]:
        with self.db.transaction() as tx:
            rows = tx.rows(
                "SELECT * FROM captures WHERE model_name = ? AND model_version = ? ORDER BY at",
                [model_name, model_version],
            )
        return [_capture(r, self.keys) for r in rows]

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
    )


def _capture(row: Row, keys: SampleKeyring) -> StoredCapture:
    inputs, outputs = open_capture(
        keys, row["device_id"], row["prediction_id"], row["outputs_json"]
    )
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
