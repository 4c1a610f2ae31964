-- What notify knows about a return: the recipient (from return.requested) and whether reminders
-- still make sense. A row may exist before return.requested arrives (a scan can come first);
-- nothing is sent for it until `known`.
CREATE TABLE returns (
    return_id          uuid PRIMARY KEY,
    known              boolean     NOT NULL DEFAULT false,
    shop_id            text,
    shop_name          text,
    kind               text,
    order_id           text,
    platform_return_id text,
    items              int,
    phone              text,          -- full E.164: only the sender reads it; never logged
    locale             text,
    timezone           text,
    requested_at       timestamptz,
    goods_moving       boolean     NOT NULL DEFAULT false,  -- moving scan, receipt or refund: no reminders
    closed             boolean     NOT NULL DEFAULT false,  -- cancelled
    correlation_id     text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX returns_by_phone ON returns (phone);

-- One row per (return, step): the durable schedule of care messages and reminders, and their outcome.
--   queued     due at due_at (a deferral moves due_at)
--   sending    claimed by a sender until lease_until (a crashed sender's rows are claimed again after it)
--   sent | failed | suppressed   final; cancelled: a reminder that became pointless (no event)
CREATE TABLE messages (
    id                  bigserial PRIMARY KEY,
    return_id           uuid        NOT NULL,
    step                text        NOT NULL,
    kind                text        NOT NULL CHECK (kind IN ('care', 'reminder')),
    rank                int         NOT NULL,
    status              text        NOT NULL DEFAULT 'queued'
                        CHECK (status IN ('queued', 'sending', 'sent', 'failed', 'suppressed', 'cancelled')),
    due_at              timestamptz NOT NULL,
    params              jsonb       NOT NULL DEFAULT '{}',
    correlation_id      text        NOT NULL,
    source_event_id     text,
    attempts            int         NOT NULL DEFAULT 0,
    deferrals           int         NOT NULL DEFAULT 0,
    locale              text,
    body                text,
    provider            text,
    sender              text,
    provider_message_id text,
    send_at             timestamptz,
    lease_until         timestamptz,
    claimed_at          timestamptz,
    sent_at             timestamptz,
    reason              text,
    last_error          text,
    delivery_status     text,
    delivery_error      text,
    delivery_at         timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (return_id, step)
);
CREATE INDEX messages_due ON messages (due_at) WHERE status = 'queued';
CREATE INDEX messages_leased ON messages (lease_until) WHERE status = 'sending';
CREATE INDEX messages_by_provider_id ON messages (provider, provider_message_id) WHERE provider_message_id IS NOT NULL;
CREATE INDEX messages_claimed ON messages (claimed_at) WHERE status IN ('sending', 'sent');

-- Consent per number: the latest opt-out / opt-in keyword wins.
CREATE TABLE opt_outs (
    phone      text PRIMARY KEY,
    opted_out  boolean     NOT NULL,
    keyword    text        NOT NULL,
    provider   text        NOT NULL,
    changed_at timestamptz NOT NULL
);

-- Inbound replies already applied (providers retry their webhooks). The text itself is not kept.
CREATE TABLE inbound_sms (
    provider    text        NOT NULL,
    provider_id text        NOT NULL,
    phone       text        NOT NULL,
    keyword     text,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (provider, provider_id)
);

-- Pacing per sender (GCRA): the theoretical time of its next send, shared by every process.
CREATE TABLE sender_pacing (
    sender text PRIMARY KEY,
    tat    timestamptz NOT NULL
);
