-- Token buckets shared by every controller using this store (login and
-- enrollment attempts per source address), so N controllers do not give
-- an attacker N times the rate. tokens is fractional: buckets refill
-- continuously.
CREATE TABLE rate_limits (
    key      TEXT PRIMARY KEY,
    tokens   DOUBLE PRECISION NOT NULL,
    updated  BIGINT NOT NULL
);
CREATE INDEX rate_limits_updated ON rate_limits(updated);
