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
    since DOUBLE PRECISION NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    fired_at DOUBLE PRECISION,
    resolved_at DOUBLE PRECISION,
    acknowledged_by TEXT,
    acknowledged_at DOUBLE PRECISION,
    updated_at DOUBLE PRECISION NOT NULL
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
    attempts BIGINT NOT NULL,
    max_attempts BIGINT NOT NULL,
    next_attempt_at DOUBLE PRECISION NOT NULL,
    last_error TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    delivered_at DOUBLE PRECISION
);
CREATE INDEX alert_deliveries_due ON alert_deliveries (state, next_attempt_at);
CREATE INDEX alert_deliveries_alert ON alert_deliveries (alert_id);

CREATE TABLE telemetry_rollups (
    device_id TEXT NOT NULL,
    package_key TEXT NOT NULL,
    bucket_start DOUBLE PRECISION NOT NULL,
    bucket_seconds DOUBLE PRECISION NOT NULL,
    model_name TEXT NOT NULL,
    model_version TEXT NOT NULL,
    package_id TEXT,
    package_sha256 TEXT,
    profile_id TEXT,
    started_at DOUBLE PRECISION NOT NULL,
    ended_at DOUBLE PRECISION NOT NULL,
    windows BIGINT NOT NULL,
    requests BIGINT NOT NULL,
    rows_scored BIGINT NOT NULL,
    errors BIGINT NOT NULL,
    invalid BIGINT NOT NULL,
    histograms_json TEXT NOT NULL,
    latency_json TEXT NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (device_id, package_key, bucket_start)
);
CREATE INDEX telemetry_rollups_version ON telemetry_rollups (model_name, model_version, started_at);
CREATE INDEX telemetry_windows_started ON telemetry_windows (started_at);
