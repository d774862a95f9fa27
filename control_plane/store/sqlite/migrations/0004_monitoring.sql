-- Monitoring: telemetry windows decoded once at ingest (beside the raw upload), the
-- predictions they captured, and the delayed labels (feedback) joined with them.
CREATE TABLE telemetry_windows (
    device_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    model_name TEXT NOT NULL,
    model_version TEXT NOT NULL,
    package_id TEXT,
    package_sha256 TEXT,
    profile_id TEXT,
    started_at REAL NOT NULL,
    ended_at REAL NOT NULL,
    bucket_start REAL NOT NULL,
    requests INTEGER NOT NULL,
    rows_scored INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    invalid INTEGER NOT NULL,
    histograms_json TEXT NOT NULL,
    latency_json TEXT NOT NULL,
    received_at REAL NOT NULL,
    PRIMARY KEY (device_id, seq)
);
CREATE INDEX telemetry_windows_version ON telemetry_windows (model_name, model_version, bucket_start);
CREATE INDEX telemetry_windows_package ON telemetry_windows (package_sha256);
-- ingest resolves a window's package id to the catalog package
CREATE INDEX packages_package_id ON packages (package_id);

CREATE TABLE captures (
    prediction_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    model_name TEXT NOT NULL,
    model_version TEXT NOT NULL,
    package_sha256 TEXT,
    at REAL NOT NULL,
    outputs_json TEXT NOT NULL,
    PRIMARY KEY (prediction_id, device_id)
);
CREATE INDEX captures_version ON captures (model_name, model_version);

CREATE TABLE feedback (
    prediction_id TEXT PRIMARY KEY,
    label REAL NOT NULL,
    received_at REAL NOT NULL,
    actor TEXT NOT NULL
);
