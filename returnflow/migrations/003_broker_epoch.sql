-- How many times a relay of this service found that the broker lost its log (the embedded broker is memory
-- only). The relay that finds it re-publishes the retained outbox and adds one; every other process of the
-- service (a service split into web and consumers processes, or replicas) sees the number move on its own
-- broker check and sends its consumers back to the start of the new log.
CREATE TABLE broker_epoch (
    one   boolean PRIMARY KEY DEFAULT true CHECK (one),
    epoch bigint  NOT NULL DEFAULT 0
);
INSERT INTO broker_epoch DEFAULT VALUES;
