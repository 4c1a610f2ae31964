-- Anchors of the audit log's chain head, as published on audit.anchors (through the outbox) and to the
-- anchors file. This copy says when the last anchor was made and what the file sink still has to write;
-- `returnflow audit verify` never trusts it (whoever can rewrite audit_log can rewrite this table too).
CREATE TABLE anchors (
    id          bigserial PRIMARY KEY,
    seq         bigint      NOT NULL,
    anchored_at timestamptz NOT NULL,
    value       text        NOT NULL,  -- the audit.anchored event as published (JSON)
    filed       boolean     NOT NULL DEFAULT false
);
CREATE INDEX anchors_to_file ON anchors (id) WHERE NOT filed;
