-- The tamper-evident audit log (see crates/store/src/chain): every record
-- carries the hash of the one before it, and the controller signs the
-- chain's head in checkpoints. Records from before this migration stay
-- unhashed; the chain starts at the first record appended after it, whose
-- previous hash is the genesis value (64 zeros). Their number is kept
-- here and signed in every checkpoint.
ALTER TABLE audit_log ADD COLUMN hash_version BIGINT;
ALTER TABLE audit_log ADD COLUMN prev_hash TEXT;
ALTER TABLE audit_log ADD COLUMN hash TEXT;

-- Ids now come from the chain's head, in commit order and without gaps (an
-- identity column skips the values of rolled-back inserts, which would
-- look like deleted records).
ALTER TABLE audit_log ALTER COLUMN id DROP IDENTITY;

-- The chain's head, one row: every append takes its row lock (in the same
-- transaction as the insert), so appenders on several controllers cannot
-- fork the chain.
CREATE TABLE audit_chain (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    last_id       BIGINT NOT NULL,
    last_hash     TEXT NOT NULL,
    genesis_id    BIGINT NOT NULL,
    legacy_count  BIGINT NOT NULL
);
INSERT INTO audit_chain (id, last_id, last_hash, genesis_id, legacy_count)
SELECT 1, COALESCE(MAX(id), 0),
       '0000000000000000000000000000000000000000000000000000000000000000',
       0, COUNT(*)
FROM audit_log;

CREATE TABLE audit_checkpoints (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ts            BIGINT NOT NULL,
    genesis_id    BIGINT NOT NULL,
    legacy_count  BIGINT NOT NULL,
    last_id       BIGINT NOT NULL,
    last_hash     TEXT NOT NULL,
    key_id        TEXT NOT NULL,
    signature     TEXT NOT NULL
);
CREATE INDEX audit_checkpoints_last ON audit_checkpoints(last_id, id);

CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
