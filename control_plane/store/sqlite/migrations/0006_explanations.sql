-- Explanations (issue #11): captured inputs kept beside the outputs (what SHAP explains),
-- per-prediction attributions (computed once, on first request or by the background job),
-- the per-package reference attributions (the manifest's test-vector rows) and the
-- per-(package, window) mean |SHAP| with its attribution drift against the reference.
ALTER TABLE captures ADD COLUMN inputs_json TEXT NOT NULL DEFAULT '{}';

CREATE TABLE explanations (
    prediction_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    package_sha256 TEXT NOT NULL,
    created_at REAL NOT NULL,
    body_json TEXT NOT NULL,
    PRIMARY KEY (prediction_id, device_id)
);

CREATE TABLE attribution_references (
    package_sha256 TEXT PRIMARY KEY,
    rows_explained INTEGER NOT NULL,
    mean_abs_json TEXT NOT NULL,
    created_at REAL NOT NULL
);

CREATE TABLE attribution_windows (
    package_sha256 TEXT NOT NULL,
    window_start REAL NOT NULL,
    window_seconds REAL NOT NULL,
    model_name TEXT NOT NULL,
    model_version TEXT NOT NULL,
    captures INTEGER NOT NULL,
    rows_explained INTEGER NOT NULL,
    mean_abs_json TEXT NOT NULL,
    drift_json TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (package_sha256, window_start)
);
CREATE INDEX attribution_windows_version ON attribution_windows (model_name, model_version, window_start);
