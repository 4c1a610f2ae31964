-- Returns as the refunds service knows them. `reserved` is the sum of the return's refunds that are
-- pending or issued; it is maintained by triggers on `refunds` (not by application code) and the
-- CHECK makes "refunds never exceed what was paid" hold under any concurrency: two workers adding
-- refunds to one return serialise on this row, and the second one to overshoot fails.
CREATE TABLE returns (
    return_id          uuid PRIMARY KEY,
    shop_id            text        NOT NULL,
    order_id           text        NOT NULL,
    kind               text        NOT NULL,
    currency           char(3)     NOT NULL,
    paid_total         bigint      NOT NULL CHECK (paid_total >= 0),
    customer_key       text        NOT NULL,
    requested_by_agent text,
    requested_at       timestamptz NOT NULL,
    lines              jsonb       NOT NULL,
    correlation_id     text        NOT NULL,
    reserved           bigint      NOT NULL DEFAULT 0,
    created_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT refunds_within_paid_total CHECK (reserved >= 0 AND reserved <= paid_total)
);

-- Facts that may arrive before the return itself (any order across topics).
CREATE TABLE moving_scans (
    return_id  uuid PRIMARY KEY,
    scan_id    text        NOT NULL,
    scan_code  text        NOT NULL,
    scanned_at timestamptz NOT NULL,
    seen_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE receipts (
    receipt_id  text PRIMARY KEY,
    return_id   uuid        NOT NULL,
    received_at timestamptz NOT NULL,
    lines       jsonb       NOT NULL,
    seen_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX receipts_by_return ON receipts (return_id);

CREATE TABLE cancellations (
    return_id    uuid PRIMARY KEY,
    cancelled_at timestamptz NOT NULL
);

-- The ledger. One row per refund; the same cause on the same return can never be paid twice.
-- Append-only: amounts never change, rows are never deleted; a refund the gateway definitively
-- refused is marked failed, which releases its amount.
CREATE TABLE refunds (
    refund_id         text PRIMARY KEY,
    return_id         uuid        NOT NULL REFERENCES returns (return_id),
    cause             text        NOT NULL,
    amount            bigint      NOT NULL CHECK (amount > 0),
    currency          char(3)     NOT NULL,
    basis             text        NOT NULL,
    actor_id          text,
    actor_role        text,
    note              text,
    status            text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'issued', 'failed')),
    idempotency_key   text        NOT NULL UNIQUE,
    attempts          int         NOT NULL DEFAULT 0,
    next_attempt_at   timestamptz NOT NULL DEFAULT now(),
    lease_until       timestamptz,
    gateway_reference text,
    last_error        text,
    correlation_id    text        NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    issued_at         timestamptz,
    UNIQUE (return_id, cause)
);
CREATE INDEX refunds_due ON refunds (next_attempt_at) WHERE status = 'pending';

CREATE FUNCTION refunds_reserve() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE returns r SET reserved = r.reserved + s.total
    FROM (SELECT return_id, sum(amount) AS total FROM inserted WHERE status <> 'failed' GROUP BY return_id) s
    WHERE r.return_id = s.return_id;
    PERFORM pg_notify(TG_TABLE_SCHEMA || '_payments', '');
    RETURN NULL;
END $$;
CREATE TRIGGER refunds_inserted AFTER INSERT ON refunds
    REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION refunds_reserve();

CREATE FUNCTION refunds_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'the refunds ledger is append-only';
    END IF;
    IF NEW.amount <> OLD.amount OR NEW.return_id <> OLD.return_id OR NEW.cause <> OLD.cause
       OR NEW.idempotency_key <> OLD.idempotency_key THEN
        RAISE EXCEPTION 'a ledger entry''s amount, return, cause and idempotency key never change';
    END IF;
    IF OLD.status <> 'pending' AND NEW.status <> OLD.status THEN
        RAISE EXCEPTION 'refund % is already %', OLD.refund_id, OLD.status;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER refunds_guarded BEFORE UPDATE OR DELETE ON refunds
    FOR EACH ROW EXECUTE FUNCTION refunds_guard();

CREATE FUNCTION refunds_release() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE returns r SET reserved = r.reserved - s.total
    FROM (SELECT n.return_id, sum(n.amount) AS total FROM new_rows n JOIN old_rows o USING (refund_id)
          WHERE n.status = 'failed' AND o.status <> 'failed' GROUP BY n.return_id) s
    WHERE r.return_id = s.return_id;
    RETURN NULL;
END $$;
CREATE TRIGGER refunds_failed AFTER UPDATE ON refunds
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION refunds_release();

-- Every cause decided for a return (refunded, escalated, waited, flagged, rejected), once.
CREATE TABLE decisions (
    return_id  uuid        NOT NULL,
    cause      text        NOT NULL,
    outcome    text        NOT NULL,
    detail     text,
    decided_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (return_id, cause)
);

CREATE TABLE escalations (
    escalation_id text PRIMARY KEY,
    return_id     uuid        NOT NULL REFERENCES returns (return_id),
    cause         text        NOT NULL,
    amount        bigint      NOT NULL CHECK (amount > 0),
    currency      char(3)     NOT NULL,
    basis         text        NOT NULL,
    required_role text        NOT NULL,
    requested_by  text,
    reason        text        NOT NULL,
    status        text        NOT NULL DEFAULT 'open'
        CHECK (status IN ('open', 'approved', 'rejected', 'superseded', 'cancelled')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    closed_at     timestamptz,
    closed_by     text
);
CREATE INDEX escalations_open ON escalations (required_role, created_at) WHERE status = 'open';
CREATE INDEX escalations_by_return ON escalations (return_id) WHERE status = 'open';

-- Goods missing or not as described after an early refund: for a person; never charged automatically.
CREATE TABLE clawbacks (
    clawback_id  text PRIMARY KEY,
    return_id    uuid        NOT NULL REFERENCES returns (return_id),
    customer_key text        NOT NULL,
    amount       bigint      NOT NULL CHECK (amount > 0),
    currency     char(3)     NOT NULL,
    receipt_id   text        NOT NULL,
    refund_id    text,
    reason       text        NOT NULL,
    status       text        NOT NULL DEFAULT 'open',
    flagged_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX clawbacks_by_customer ON clawbacks (customer_key, flagged_at);

-- Who may decide, with which role. The role used is always this one, never one from a request.
CREATE TABLE roster (
    actor_id     text PRIMARY KEY,
    role         text        NOT NULL CHECK (role IN ('agent', 'supervisor', 'manager', 'owner')),
    display_name text,
    token_sha256 bytea UNIQUE,
    active       boolean     NOT NULL DEFAULT true,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Every command (HTTP or refunds.commands) and what it did: the record of every use of authority.
CREATE TABLE commands (
    command_id      text PRIMARY KEY,
    return_id       uuid        NOT NULL,
    source          text        NOT NULL,
    actor_id        text        NOT NULL,
    actor_role      text,
    action          text        NOT NULL,
    amount          bigint,
    note            text,
    status          text        NOT NULL,  -- parked (return not known yet) | done
    http_status     int,
    result          text,
    message         text,
    required_role   text,
    idempotency_key text UNIQUE,
    correlation_id  text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    decided_at      timestamptz
);
CREATE INDEX commands_parked ON commands (return_id) WHERE status = 'parked';
