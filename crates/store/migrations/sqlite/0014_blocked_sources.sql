-- Source addresses blocked at every gateway until a time: threat
-- detection's automatic response (or an admin). An admin lifts a block by
-- deleting its row; expired rows are ignored and pruned.
CREATE TABLE blocked_sources (
    address    TEXT PRIMARY KEY,
    until      BIGINT NOT NULL,
    reason     TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
