-- The UDP port a dark gateway takes SPA knocks on (NULL: not dark), as it
-- announced at registration; logins tell agents where to knock.
ALTER TABLE gateways ADD COLUMN spa_port BIGINT;
