-- Uploads refused over a device's ingest quota, counted for operators (never dropped silently).
ALTER TABLE devices ADD COLUMN uploads_refused INTEGER NOT NULL DEFAULT 0;
