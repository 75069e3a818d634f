-- The controller re-evaluates every live session (on an interval its risk
-- sets, and at once on events). Its latest verdict:
--   current_risk  the score now (NULL: not re-evaluated yet; `risk` stays
--                 the login-time score the session's tokens carry);
--   evaluated_at  when (Unix seconds);
--   step_up_at    set while a step-up is owed for a condition that arose
--                 then: the gateways want an MFA after it. Cleared
--                 when the condition clears, so a lasting condition asks
--                 once and a recurring one asks again.
ALTER TABLE sessions ADD COLUMN current_risk BIGINT;
ALTER TABLE sessions ADD COLUMN evaluated_at BIGINT;
ALTER TABLE sessions ADD COLUMN step_up_at BIGINT;
