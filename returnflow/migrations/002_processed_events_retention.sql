-- Consumed event ids are kept for dropping duplicates only as long as a message can come back (topic
-- retention, outbox retention); the relay's housekeeping deletes older ones by processed_at. BRIN: the
-- column grows with insertion order, and a BRIN index costs next to nothing on the hot insert path.
CREATE INDEX processed_events_by_time ON processed_events USING brin (processed_at);
