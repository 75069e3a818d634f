-- One audit record may stand for several identical decisions: a gateway
-- sums up the allowed requests of one session to one resource over a
-- flush interval (about 500 ms) instead of storing each of them.
ALTER TABLE audit_log ADD COLUMN count BIGINT NOT NULL DEFAULT 1 CHECK (count >= 1);
