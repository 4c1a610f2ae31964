-- Each timeline entry keeps its event's payload (phone numbers removed) so the after-sales lead's
-- reports are computed from the same events the timeline shows.
ALTER TABLE timeline ADD COLUMN data jsonb NOT NULL DEFAULT '{}'::jsonb;
CREATE INDEX timeline_by_type_time ON timeline (type, occurred_at);
