-- Work for a person (issue 15). A refund the gateway declined for good waits for a supervisor or above:
-- retry it (a new ledger entry), note it settled offline, or close it. Once per declined refund.
ALTER TABLE refunds ADD COLUMN failed_at timestamptz;
UPDATE refunds SET failed_at = created_at WHERE status = 'failed';
CREATE INDEX refunds_failed ON refunds (failed_at, refund_id) WHERE status = 'failed';

CREATE TABLE failure_resolutions (
    refund_id       text PRIMARY KEY REFERENCES refunds (refund_id),
    return_id       uuid        NOT NULL,
    action          text        NOT NULL CHECK (action IN ('retry', 'settled_offline', 'close')),
    note            text,
    resolved_by     text        NOT NULL,
    resolved_role   text        NOT NULL,
    retry_refund_id text REFERENCES refunds (refund_id),
    correlation_id  text        NOT NULL,
    resolved_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX failure_resolutions_by_return ON failure_resolutions (return_id, resolved_at);

-- A clawback is closed by a person, once: waived, recovered off-platform, or written off.
ALTER TABLE clawbacks
    ADD COLUMN resolution      text CHECK (resolution IN ('waived', 'recovered_off_platform', 'written_off')),
    ADD COLUMN resolution_note text,
    ADD COLUMN resolved_by     text,
    ADD COLUMN resolved_role   text,
    ADD COLUMN resolved_at     timestamptz;
CREATE INDEX clawbacks_open ON clawbacks (flagged_at, clawback_id) WHERE status = 'open';
CREATE INDEX escalations_queue ON escalations (created_at, escalation_id) WHERE status = 'open';
