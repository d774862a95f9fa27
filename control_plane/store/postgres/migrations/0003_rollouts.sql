-- Rollouts (issue #10): the engine's state as JSON, a revision for compare-and-set,
-- the outbox of actions saved with the state; commands know their rollout and execution key.
CREATE TABLE rollouts (
    id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    phase TEXT NOT NULL,
    spec_json TEXT NOT NULL,
    state_json TEXT NOT NULL,
    revision INTEGER NOT NULL,
    outbox_json TEXT NOT NULL DEFAULT '[]',
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX rollouts_phase ON rollouts (phase);

ALTER TABLE commands ADD COLUMN execution_key TEXT;
ALTER TABLE commands ADD COLUMN rollout_id TEXT;
ALTER TABLE commands ADD COLUMN rollout_fed_at DOUBLE PRECISION;
CREATE UNIQUE INDEX commands_execution_key ON commands (execution_key);
CREATE INDEX commands_rollout ON commands (rollout_id, status);
