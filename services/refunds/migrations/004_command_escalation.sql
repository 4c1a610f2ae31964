-- An approve / reject may name the escalation it decides (issue 15: a supervisor could not approve an
-- agent's 30.00 while an older 100.00 waited for a manager). Kept with the command so that a parked one
-- and a retry under its Idempotency-Key decide the same escalation; the answer names the one decided.
ALTER TABLE commands ADD COLUMN escalation_id text, ADD COLUMN answer_escalation_id text;
