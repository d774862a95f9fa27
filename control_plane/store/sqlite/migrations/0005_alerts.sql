-- Alerts live in the store: the alert book (pending, firing, resolved; acknowledged), the
-- notification outbox (every delivery attempt recorded; a failed one stays visible), and the
-- telemetry rollups retention writes (older windows merged per device, package and bucket).
CREATE TABLE alerts (
    id TEXT PRIMARY KEY,
    alert_key TEXT NOT NULL UNIQUE,
    rule TEXT NOT NULL,
    series TEXT NOT NULL,
    model_name TEXT,
    model_version TEXT,
    severity TEXT NOT NULL,
    state TEXT NOT NULL,
    rule_json TEXT NOT NULL,
    labels_json TEXT NOT NULL,
    since REAL NOT NULL,
    value REAL NOT NULL,
    fired_at REAL,
    resolved_at REAL,
    acknowledged_by TEXT,
    acknowledged_at REAL,
    updated_at REAL NOT NULL
);
CREATE INDEX alerts_state ON alerts (state, updated_at);
CREATE INDEX alerts_version ON alerts (model_name, model_version, state);

CREATE TABLE alert_deliveries (
    id TEXT PRIMARY KEY,
    alert_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    target TEXT NOT NULL,
    kind TEXT NOT NULL,
    body_json TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    next_attempt_at REAL NOT NULL,
    last_error TEXT,
    created_at REAL NOT NULL,
    delivered_at REAL
);
CREATE INDEX alert_deliveries_due ON alert_deliveries (state, next_attempt_at);
CREATE INDEX alert_deliveries_alert ON alert_deliveries (alert_id);

CREATE TABLE telemetry_rollups (
    device_id TEXT NOT NULL,
    package_key TEXT NOT NULL,
    bucket_start REAL NOT NULL,
    bucket_seconds REAL NOT NULL,
    model_name TEXT NOT NULL,
    model_version TEXT NOT NULL,
    package_id TEXT,
    package_sha256 TEXT,
    profile_id TEXT,
    started_at REAL NOT NULL,
    ended_at REAL NOT NULL,
    windows INTEGER NOT NULL,
    requests INTEGER NOT NULL,
    rows_scored INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    invalid INTEGER NOT NULL,
    histograms_json TEXT NOT NULL,
    latency_json TEXT NOT NULL,
    received_at REAL NOT NULL,
    PRIMARY KEY (device_id, package_key, bucket_start)
);
CREATE INDEX telemetry_rollups_version ON telemetry_rollups (model_name, model_version, started_at);
CREATE INDEX telemetry_windows_started ON telemetry_windows (started_at);
