-- Retention of raw uploads and captures (issue #11).
-- upload_pruned: the (device, seq) ranges of raw uploads that were received and then pruned,
-- as closed intervals [lo, hi] of sequence numbers all received (a gap stays a gap: a seq
-- never received is never taken for one). The trigger keeps exactly-once across pruning:
-- an INSERT of a (device, seq) inside a pruned range is skipped (RETURN NULL), so the
-- ingest's INSERT .. ON CONFLICT DO NOTHING RETURNING answers it as a duplicate.
CREATE TABLE upload_pruned (
    device_id TEXT NOT NULL,
    lo BIGINT NOT NULL,
    hi BIGINT NOT NULL,
    PRIMARY KEY (device_id, lo)
);
CREATE FUNCTION uploads_not_pruned() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM upload_pruned p
        WHERE p.device_id = NEW.device_id AND p.lo <= NEW.seq AND p.hi >= NEW.seq
    ) THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER uploads_not_pruned BEFORE INSERT ON uploads
FOR EACH ROW EXECUTE FUNCTION uploads_not_pruned();
-- the rollout gates read the indexed windows, not raw bodies: a function alias's windows
-- carry the alias (rollups keep it apart in their package key)
ALTER TABLE telemetry_windows ADD COLUMN alias TEXT;
ALTER TABLE telemetry_rollups ADD COLUMN alias TEXT;
-- captures pruned by prediction time, unmatched labels by arrival
CREATE INDEX captures_at ON captures (at);
CREATE INDEX feedback_received ON feedback (received_at);
