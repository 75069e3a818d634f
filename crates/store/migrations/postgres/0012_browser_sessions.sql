-- Browser sessions (the controller's login page, forward-auth): a user
-- with no device and no certificate. Kept apart from `sessions`, whose
-- device and certificate columns are NOT NULL with foreign keys, so that
-- this migration only adds (a table rebuild in SQLite would race the
-- other migrations that add columns to `sessions`). Ids are random
-- UUIDs, unique across both tables: the admin API lists and revokes
-- either kind by id, and revocations reach the gateways alike.
CREATE TABLE browser_sessions (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL REFERENCES users(id),
    source_ip       TEXT NOT NULL,
    risk            BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    revoked_at      BIGINT,
    revoked_reason  TEXT,
    mfa_at          BIGINT
);
CREATE INDEX browser_sessions_user ON browser_sessions(user_id);
CREATE INDEX browser_sessions_expiry ON browser_sessions(expires_at);
