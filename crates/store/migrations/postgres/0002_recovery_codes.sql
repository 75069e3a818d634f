-- One-time recovery codes: a user who lost their authenticator logs in with
-- password + one code instead of a TOTP code. Only a keyed hash is stored.
CREATE TABLE recovery_codes (
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    code_hash   TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    used_at     BIGINT,
    PRIMARY KEY (user_id, code_hash)
);
