-- The tamper-evident audit log (see crates/store/src/chain): every record
-- carries the hash of the one before it, and the controller signs the
-- chain's head in checkpoints. Records from before this migration stay
-- unhashed; the chain starts at the first record appended after it, whose
-- previous hash is the genesis value (64 zeros). Their number is kept
-- here and signed in every checkpoint.
ALTER TABLE audit_log ADD COLUMN hash_version INTEGER;
ALTER TABLE audit_log ADD COLUMN prev_hash TEXT;
ALTER TABLE audit_log ADD COLUMN hash TEXT;

-- The chain's head, one row: every append takes its write lock (in the
-- same transaction as the insert), so appenders cannot fork the chain, and
-- ids are handed out here, without gaps.
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
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    ts            BIGINT NOT NULL,
    genesis_id    BIGINT NOT NULL,
    legacy_count  BIGINT NOT NULL,
    last_id       BIGINT NOT NULL,
    last_hash     TEXT NOT NULL,
    key_id        TEXT NOT NULL,
    signature     TEXT NOT NULL
);
CREATE INDEX audit_checkpoints_last ON audit_checkpoints(last_id, id);

CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only'); END;
CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only'); END;
