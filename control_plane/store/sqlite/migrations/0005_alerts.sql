-- Placeholder: 0005 belongs to the alerts branch (issue #11, alerts/retention). On merge,
-- take that branch's file; a store created from this placeholder is already at version 5.
SELECT 1;
