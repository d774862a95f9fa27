-- Alert rules an operator set per model (issue #11): one row per (model, rule name). A row
-- whose name is a default rule's replaces it (enabled = 0 disables it); any other name adds
-- a rule. rule_json is core/alerts.rule_to_dict of the complete rule.
CREATE TABLE alert_rules (
    model_name TEXT NOT NULL,
    name TEXT NOT NULL,
    metric TEXT NOT NULL,
    rule_json TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    updated_by TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (model_name, name)
);
