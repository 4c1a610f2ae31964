-- The team's numbers (GET /v1/refunds/team) read a range of days: decided escalations by when they were
-- decided, decisions by when they took effect, refunds people decided by when.
CREATE INDEX escalations_closed ON escalations (closed_at) WHERE closed_by IS NOT NULL;
CREATE INDEX commands_decided ON commands (decided_at) WHERE status = 'done';
CREATE INDEX refunds_by_person ON refunds (created_at) WHERE actor_id IS NOT NULL;
