-- Token-signing keys, sealed by the KEK. The newest unretired key signs;
-- a retired key stays published (JWKS) and accepted until retire_at, when
-- every token it signed has expired.
CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY,
    sealed_key  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    retire_at   BIGINT
);
