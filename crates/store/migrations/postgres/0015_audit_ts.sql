-- The dashboard tallies the last day of audit records by action, outcome
-- and hour: a range scan on time instead of the whole log.
CREATE INDEX audit_log_ts ON audit_log(ts);
