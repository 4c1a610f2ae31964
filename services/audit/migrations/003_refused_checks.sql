-- Returns-team checks from inventory.checks that did not prove their person (unsigned, signed with
-- another key, altered, stale): never recorded as a side, kept here with the reason.
CREATE TABLE refused_checks (
    event_id       uuid PRIMARY KEY,
    return_id      uuid        NOT NULL,
    check_id       text        NOT NULL,
    claimed_by     text        NOT NULL,
    reason         text        NOT NULL,
    correlation_id text        NOT NULL,
    command        jsonb       NOT NULL,  -- as it arrived
    refused_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refused_checks_by_return ON refused_checks (return_id);
