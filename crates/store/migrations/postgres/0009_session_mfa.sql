-- When the session's subject last passed MFA (Unix seconds): set at login
-- (password + TOTP or a recovery code) and moved by a step-up. Policies
-- compare its age with what a service asks (`max_mfa_age_seconds`, the
-- step-up band). NULL: never (no session is opened without MFA today,
-- but the column says so rather than assume).
ALTER TABLE sessions ADD COLUMN mfa_at BIGINT;
