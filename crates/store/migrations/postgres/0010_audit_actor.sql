-- The risk engine learns each user's usual hours, networks and services
-- from their own audit records at every login: find them by actor and
-- time without scanning the whole log.
CREATE INDEX audit_log_actor_ts ON audit_log(actor, ts);
