-- Returns seen on returns.requested: an attestation for any other return is a discrepancy.
CREATE TABLE known_returns (
    return_id    uuid PRIMARY KEY,
    kind         text        NOT NULL,
    requested_at timestamptz NOT NULL,
    known_at     timestamptz NOT NULL DEFAULT now()
);

-- What was asked back and what the warehouse received, per SKU (for reconciliation).
CREATE TABLE requested_lines (
    return_id uuid NOT NULL,
    sku       text NOT NULL,
    qty       int  NOT NULL,
    PRIMARY KEY (return_id, sku)
);

CREATE TABLE received_lines (
    receipt_id   text        NOT NULL,
    line_no      int         NOT NULL,
    return_id    uuid        NOT NULL,
    sku          text        NOT NULL,
    qty_received int         NOT NULL,
    condition    text        NOT NULL,
    disposition  text        NOT NULL,
    received_at  timestamptz NOT NULL,
    PRIMARY KEY (receipt_id, line_no)
);
CREATE INDEX received_lines_by_sku ON received_lines (sku);

-- One side of a dual check (working state; the audit_log below is the record). Open while outcome IS NULL.
CREATE TABLE sides (
    key            text PRIMARY KEY,  -- '<source>:<attestation or check id>'
    source         text        NOT NULL CHECK (source IN ('warehouse', 'returns_team')),
    side_id        text        NOT NULL,
    return_id      uuid        NOT NULL,
    sku            text        NOT NULL,
    movement       text        NOT NULL,
    quantity       int         NOT NULL CHECK (quantity >= 0),
    person         text        NOT NULL,
    attested_at    timestamptz NOT NULL,
    received_at    timestamptz NOT NULL,
    via            text        NOT NULL,  -- kafka | http
    correlation_id text        NOT NULL,
    note           text,
    log_seq        bigint      NOT NULL,
    outcome        text CHECK (outcome IN ('verified', 'discrepancy', 'attached')),
    discrepancy_id text,
    reason         text,
    partner_key    text,
    closed_at      timestamptz
);
CREATE INDEX sides_by_case ON sides (return_id, sku);
CREATE INDEX sides_open ON sides (attested_at) WHERE outcome IS NULL;
CREATE INDEX sides_by_discrepancy ON sides (discrepancy_id) WHERE discrepancy_id IS NOT NULL;

CREATE TABLE movements (
    id               bigserial PRIMARY KEY,
    return_id        uuid        NOT NULL,
    sku              text        NOT NULL,
    movement         text        NOT NULL,
    quantity         int         NOT NULL,
    warehouse_key    text        NOT NULL UNIQUE,
    returns_team_key text        NOT NULL UNIQUE,
    verified_at      timestamptz NOT NULL,
    log_seq          bigint      NOT NULL
);
CREATE INDEX movements_by_sku ON movements (sku);
CREATE INDEX movements_by_return ON movements (return_id);

CREATE TABLE discrepancies (
    id              text PRIMARY KEY,
    reason          text        NOT NULL,
    return_id       uuid        NOT NULL,
    sku             text        NOT NULL,
    movement        text,
    details         text        NOT NULL,
    status          text        NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'resolved')),
    opened_at       timestamptz NOT NULL,
    log_seq         bigint      NOT NULL,
    resolved_at     timestamptz,
    resolved_by     text,
    resolution_note text,
    resolution_seq  bigint
);
CREATE INDEX discrepancies_by_time ON discrepancies (opened_at);
CREATE INDEX discrepancies_by_return ON discrepancies (return_id);

-- The append-only, tamper-evident log. Writers take LOCK TABLE audit_log IN EXCLUSIVE MODE first,
-- so entries are numbered without gaps and each links to the one before (see services/audit/chain.py).
CREATE TABLE audit_log (
    seq         bigint PRIMARY KEY CHECK (seq > 0),
    type        text        NOT NULL,
    recorded_at timestamptz NOT NULL,
    return_id   text,
    sku         text,
    content     text        NOT NULL,
    prev_hash   text        NOT NULL CHECK (length(prev_hash) = 64),
    hash        text        NOT NULL UNIQUE CHECK (length(hash) = 64)
);
CREATE INDEX audit_log_by_return ON audit_log (return_id) WHERE return_id IS NOT NULL;

CREATE FUNCTION audit_log_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'record a correction as a new entry (for example a discrepancy resolution)';
END $$;
CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_refuse_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse_change();
