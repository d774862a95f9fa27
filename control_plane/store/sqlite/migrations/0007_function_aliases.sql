-- Function aliases (issues #10, #12): FUNCTION:ALIAS -> a traffic split over model versions
-- (routes_json: {"version": percent}), the device id the function's containers report
-- telemetry under (what an alias rollout's gates read), a revision for compare-and-set.
CREATE TABLE function_aliases (
    name TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    routes_json TEXT NOT NULL,
    telemetry_device TEXT NOT NULL,
    revision INTEGER NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX function_aliases_model ON function_aliases (model);
