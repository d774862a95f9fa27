"""Explanations, attribution windows, and the reads lineage needs (migration 0006)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from control_plane.crypto import SampleKeyring
from control_plane.store.records import AttributionWindow, StoredCapture
from control_plane.store.sql.base import Database, Row, dumps, loads, time_range, where_clause
from control_plane.store.sql.monitoring import capture_from_row


class SqlInsightRepo:
    def __init__(self, db: Database, keys: SampleKeyring) -> None:
        self.db = db
        self.keys = keys  # captures are sealed at rest

    # -- per-prediction explanations (computed once, then read back)

    def explanation(self, prediction_id: str, device_id: str) -> dict[str, Any] | None:
        with self.db.transaction() as tx:
            row = tx.row(
                "SELECT body_json FROM explanations WHERE prediction_id = ? AND device_id = ?",
                [prediction_id, device_id],
            )
        return None if row is None else dict(loads(row["body_json"]))

    def put_explanation(
        self, prediction_id: str, device_id: str, sha256: str, body: Mapping[str, Any], at: float
    ) -> None:
        with self.db.transaction() as tx:
            tx.execute(
                "INSERT INTO explanations (prediction_id, device_id, package_sha256, created_at,"
                " body_json) VALUES (?, ?, ?, ?, ?) ON CONFLICT (prediction_id, device_id)"
                " DO NOTHING",
                [prediction_id, device_id, sha256, at, dumps(dict(body))],
            )

    # -- reference attributions per package

    def reference(self, sha256: str) -> tuple[int, dict[str, float]] | None:
        with self.db.transaction() as tx:
            row = tx.row(
                "SELECT rows_explained, mean_abs_json FROM attribution_references"
                " WHERE package_sha256 = ?",
                [sha256],
            )
        if row is None:
            return None
        return int(row["rows_explained"]), {
            k: float(v) for k, v in loads(row["mean_abs_json"]).items()
        }

    def put_reference(
        self, sha256: str, rows: int, mean_abs: Mapping[str, float], at: float
    ) -> None:
        with self.db.transaction() as tx:
            tx.execute(
                "INSERT INTO attribution_references (package_sha256, rows_explained,"
                " mean_abs_json, created_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (package_sha256) DO NOTHING",
                [sha256, rows, dumps(dict(mean_abs)), at],
            )

    # -- attribution windows

    def put_window(self, window: AttributionWindow) -> None:
        with self.db.transaction() as tx:
            tx.execute(
                "INSERT INTO attribution_windows (package_sha256, window_start, window_seconds,"
                " model_name, model_version, captures, rows_explained, mean_abs_json,"
                " drift_json, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (package_sha256, window_start) DO UPDATE SET"
                " window_seconds = excluded.window_seconds, captures = excluded.captures,"
                " rows_explained = excluded.rows_explained,"
                " mean_abs_json = excluded.mean_abs_json, drift_json = excluded.drift_json,"
                " created_at = excluded.created_at",
                [
                    window.package_sha256,
                    window.window_start,
                    window.window_seconds,
                    window.model_name,
                    window.model_version,
                    window.captures,
                    window.rows_explained,
                    dumps(dict(window.mean_abs)),
                    dumps(dict(window.drift)),
                    window.created_at,
                ],
            )

    def windows(
        self,
        *,
        model_name: str,
        model_version: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[AttributionWindow]:
        conds, params = where_clause(
            {"model_name": model_name, "model_version": model_version},
            time_range("window_start", since, until),
        )
        with self.db.transaction() as tx:
            rows = tx.rows(
                "SELECT * FROM attribution_windows"
                + conds
                + " ORDER BY window_start, package_sha256",
                params,
            )
        return [_attribution_window(r) for r in rows]

    def window_starts(self, sha256: str) -> set[float]:
        with self.db.transaction() as tx:
            rows = tx.rows(
                "SELECT window_start FROM attribution_windows WHERE package_sha256 = ?", [sha256]
            )
        return {float(r["window_start"]) for r in rows}

    # -- reads over the captures and windows

    def capture_counts(self, since: float, until: float) -> dict[str, int]:
        """Captures per catalog package predicted in [since, until)."""
        with self.db.transaction() as tx:
            rows = tx.rows(
                "SELECT package_sha256, COUNT(*) AS n FROM captures WHERE package_sha256 IS NOT"
                " NULL AND at >= ? AND at < ? GROUP BY package_sha256",
                [since, until],
            )
        return {r["package_sha256"]: int(r["n"]) for r in rows}

    def capture_ids(self, sha256: str, since: float, until: float) -> list[str]:
        """Prediction ids of one package's captures in [since, until) (ids only: cheap)."""
        with self.db.transaction() as tx:
            rows = tx.rows(
                "SELECT prediction_id FROM captures WHERE package_sha256 = ? AND at >= ?"
                " AND at < ? ORDER BY prediction_id",
                [sha256, since, until],
            )
        return [r["prediction_id"] for r in rows]

    def capture(self, prediction_id: str) -> list[StoredCapture]:
        """Every capture of a prediction id (one per device that reported it)."""
        with self.db.transaction() as tx:
            rows = tx.rows(
                "SELECT * FROM captures WHERE prediction_id = ? ORDER BY device_id", [prediction_id]
            )
        return [capture_from_row(r, self.keys) for r in rows]

    def running_packages(self) -> list[tuple[str, str, str, float]]:
        """(device, model, package sha256, last window end) of each device's latest window
        per model: the package it scores with now, as far as telemetry says."""
        with self.db.transaction() as tx:
            rows = tx.rows(
                "SELECT w.device_id, w.model_name, w.package_sha256, w.ended_at"
                " FROM telemetry_windows w JOIN (SELECT device_id, model_name,"
                " MAX(started_at) AS latest FROM telemetry_windows GROUP BY device_id,"
                " model_name) m ON w.device_id = m.device_id AND w.model_name = m.model_name"
                " AND w.started_at = m.latest WHERE w.package_sha256 IS NOT NULL"
                " ORDER BY w.device_id, w.model_name"
            )
        return [
            (r["device_id"], r["model_name"], r["package_sha256"], float(r["ended_at"]))
            for r in rows
        ]


def _attribution_window(row: Row) -> AttributionWindow:
    return AttributionWindow(
        package_sha256=row["package_sha256"],
        window_start=float(row["window_start"]),
        window_seconds=float(row["window_seconds"]),
        model_name=row["model_name"],
        model_version=row["model_version"],
        captures=int(row["captures"]),
        rows_explained=int(row["rows_explained"]),
        mean_abs={k: float(v) for k, v in loads(row["mean_abs_json"]).items()},
        drift=dict(loads(row["drift_json"])),
        created_at=float(row["created_at"]),
    )
