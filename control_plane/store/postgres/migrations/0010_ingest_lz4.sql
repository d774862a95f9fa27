-- Telemetry ingest (issue #11): the large JSON text written once per window (the raw upload,
-- the window's histograms, a rollup's merged histograms) is TOAST-compressed with lz4 instead
-- of the default pglz. Measured on the ingest benchmark (benchmarks/bench_ingest.py): the
-- server's CPU per stored window falls by a quarter to a third (lz4 compresses these 2-4 kB
-- JSON texts much faster, for slightly larger values). Rows written before keep their pglz
-- values (both read back); only the method for new values changes, no table is rewritten.
-- A server built without lz4 (or before PostgreSQL 14) keeps pglz: the step does nothing.
DO $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM pg_settings
        WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)
    ) THEN
        ALTER TABLE uploads ALTER COLUMN body_json SET COMPRESSION lz4;
        ALTER TABLE telemetry_windows ALTER COLUMN histograms_json SET COMPRESSION lz4;
        ALTER TABLE telemetry_rollups ALTER COLUMN histograms_json SET COMPRESSION lz4;
    END IF;
END
$$;
