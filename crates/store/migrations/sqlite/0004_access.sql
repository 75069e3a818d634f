-- Access path: services and their grants, gateways, and the event log the
-- controllers push to gateways over the control channel.

-- Who may reach a service, until the policy engine replaces it: a user is
-- granted the service when named in allow_users or a member of one of
-- allow_groups (both JSON arrays of names).
CREATE TABLE services (
    name          TEXT PRIMARY KEY,
    allow_users   TEXT NOT NULL,
    allow_groups  TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

-- A gateway enrolls once with a one-time token (only its SHA-256 is kept),
-- then registers on every start: the URL agents reach it on, the services it
-- routes, and the public key its identity assertions verify with (JSON).
CREATE TABLE gateways (
    name              TEXT PRIMARY KEY,
    status            TEXT NOT NULL CHECK (status IN ('pending', 'active', 'revoked')),
    sans              TEXT NOT NULL,
    token_hash        TEXT UNIQUE,
    token_expires_at  BIGINT,
    cert_serial       TEXT,
    cert_not_after    BIGINT,
    url               TEXT,
    services          TEXT NOT NULL DEFAULT '[]',
    assertion_jwk     TEXT,
    created_by        TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL
);

-- Events pushed to gateways. seq comes from event_counter, incremented in
-- the same transaction as the insert: the row lock orders writers, so a
-- reader tailing "seq > last" never misses an event that commits late.
CREATE TABLE events (
    seq      BIGINT PRIMARY KEY,
    ts       BIGINT NOT NULL,
    kind     TEXT NOT NULL,
    payload  TEXT NOT NULL
);
CREATE INDEX events_ts ON events(ts);

CREATE TABLE event_counter (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL
);
INSERT INTO event_counter (id, seq) VALUES (1, 0);
