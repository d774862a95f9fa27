-- Fleet: devices, labels, enrollment tokens, commands, packages, uploads, audit.
CREATE TABLE devices (
    id TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
    host_json TEXT NOT NULL,
    profile_id TEXT,
    agent_version TEXT,
    slots_json TEXT NOT NULL DEFAULT '{}',
    enrolled_at REAL NOT NULL,
    revoked_at REAL,
    last_seen REAL,
    next_version INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX devices_status ON devices (status);
CREATE INDEX devices_profile ON devices (profile_id);

CREATE TABLE device_labels (
    device_id TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (device_id, key)
);
CREATE INDEX device_labels_key_value ON device_labels (key, value);

CREATE TABLE enrollment_tokens (
    token_hash TEXT PRIMARY KEY,
    device_id TEXT,
    created_at REAL NOT NULL,
    expires_at REAL,
    used_by TEXT,
    used_at REAL
);

CREATE TABLE commands (
    id TEXT PRIMARY KEY,
    device_id TEXT NOT NULL REFERENCES devices (id),
    execution_version INTEGER NOT NULL,
    kind TEXT NOT NULL,
    body_json TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'ok', 'failed')),
    created_at REAL NOT NULL,
    acked_at REAL,
    result_json TEXT,
    UNIQUE (device_id, execution_version)
);
CREATE INDEX commands_pending ON commands (status, device_id, execution_version);

CREATE TABLE packages (
    sha256 TEXT PRIMARY KEY,
    package_id TEXT NOT NULL,
    model_name TEXT NOT NULL,
    model_version TEXT NOT NULL,
    profile_id TEXT NOT NULL,
    release INTEGER NOT NULL,
    size_bytes INTEGER NOT NULL,
    path TEXT NOT NULL,
    manifest_json TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX packages_model ON packages (model_name, model_version, profile_id);

CREATE TABLE uploads (
    device_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    body_json TEXT NOT NULL,
    received_at REAL NOT NULL,
    transport TEXT NOT NULL,
    PRIMARY KEY (device_id, seq)
);
CREATE INDEX uploads_kind_received ON uploads (kind, received_at);

CREATE TABLE audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    before_json TEXT,
    after_json TEXT,
    detail_json TEXT NOT NULL
);
CREATE INDEX audit_at ON audit (at);
CREATE INDEX audit_actor ON audit (actor);
CREATE INDEX audit_subject ON audit (subject);

-- Catalog: models, immutable versions with a card, aliases; API tokens; compile jobs.
CREATE TABLE models (
    name TEXT PRIMARY KEY,
    description TEXT NOT NULL,
    owner TEXT NOT NULL,
    created_at REAL NOT NULL
);

CREATE TABLE model_versions (
    model TEXT NOT NULL REFERENCES models (name),
    version TEXT NOT NULL,
    card_json TEXT NOT NULL,
    source_sha256 TEXT,
    stage TEXT NOT NULL,
    created_at REAL NOT NULL,
    stage_changed_at REAL NOT NULL,
    PRIMARY KEY (model, version)
);

CREATE TABLE aliases (
    model TEXT NOT NULL,
    alias TEXT NOT NULL,
    version TEXT NOT NULL,
    previous_version TEXT,
    updated_at REAL NOT NULL,
    PRIMARY KEY (model, alias),
    FOREIGN KEY (model, version) REFERENCES model_versions (model, version)
);

CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    created_by TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL,
    revoked_at REAL,
    last_used_at REAL
);

CREATE TABLE compile_jobs (
    id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    profiles_json TEXT NOT NULL,
    state TEXT NOT NULL,
    progress REAL NOT NULL,
    log TEXT NOT NULL,
    report_json TEXT,
    error TEXT,
    requested_by TEXT NOT NULL,
    worker TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    FOREIGN KEY (model, version) REFERENCES model_versions (model, version)
);
CREATE INDEX compile_jobs_state ON compile_jobs (state, created_at);
