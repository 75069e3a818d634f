-- The OPA-compatible policy API: Rego modules (PUT /v1/policies/{id}, raw
-- text as sent) and data documents (PUT /v1/data/{path}, JSON), from which
-- every controller builds the policy set it serves.
CREATE TABLE policies (
    id          TEXT PRIMARY KEY,
    raw         TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

-- A data document at a slash-separated path (`a/b` is data.a.b). A write
-- at a path replaces everything stored below it, so rows never overlap in
-- a way that leaves two answers for one path.
CREATE TABLE policy_data (
    path        TEXT PRIMARY KEY,
    document    TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);

-- Bumped in the same transaction as every change to the two tables above:
-- controllers poll it and rebuild their policy set when it moves. The
-- UPDATE's row lock also orders concurrent policy writes.
CREATE TABLE policy_revision (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    revision  BIGINT NOT NULL
);
INSERT INTO policy_revision (id, revision) VALUES (1, 0);
