-- PLACEHOLDER on the monitoring-wire branch only: migration 0003 belongs to the rollouts
-- branch (rollouts-wire, 0003_rollouts.sql); migrations must be numbered without gaps, so
-- this keeps 0004_monitoring applicable here. On merge take the rollouts branch's file.
SELECT 1;
