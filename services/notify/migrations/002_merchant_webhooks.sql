-- Merchant webhooks (Standard Webhooks): one delivery per (shop endpoint, lifecycle event), recorded by the
-- consumer in the transaction that applies the event and delivered by the webhook worker with retries.
--   pending    due at next_attempt_at (first attempt, or a retry after a failure)
--   sending    claimed by a worker until lease_until (a crashed worker's rows are claimed again after it)
--   delivered  the endpoint answered 2xx; failed: still refused at give_up_at, or the endpoint was removed
CREATE TABLE webhook_deliveries (
    id              bigserial PRIMARY KEY,
    shop_id         text        NOT NULL,
    url             text        NOT NULL,
    event_id        uuid        NOT NULL,   -- the lifecycle event it tells of
    webhook_id      text        NOT NULL,   -- the webhook-id header: the same on every attempt
    type            text        NOT NULL,   -- the merchant event type (refund.paid, ...)
    return_id       uuid        NOT NULL,
    correlation_id  text        NOT NULL,
    body            bytea       NOT NULL,   -- the exact bytes signed and sent on every attempt
    status          text        NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'sending', 'delivered', 'failed')),
    attempts        int         NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    lease_until     timestamptz,
    last_attempt_at timestamptz,
    last_status     int,                    -- the endpoint's last HTTP status (NULL: no answer)
    last_error      text,                   -- the last failure, kept after a later success
    delivered_at    timestamptz,
    give_up_at      timestamptz NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (shop_id, url, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_leased ON webhook_deliveries (lease_until) WHERE status = 'sending';
CREATE INDEX webhook_deliveries_by_shop ON webhook_deliveries (shop_id, created_at DESC, id DESC);
CREATE INDEX webhook_deliveries_finished ON webhook_deliveries (created_at) WHERE status IN ('delivered', 'failed');

-- Merchant events of returns whose return.requested has not arrived yet (a refund or a scan can come first):
-- their shop is not known, so they wait here and are fanned out to the shop's endpoints with the request.
CREATE TABLE webhook_waiting (
    event_id       uuid PRIMARY KEY,
    return_id      uuid        NOT NULL,
    type           text        NOT NULL,
    occurred_at    timestamptz NOT NULL,
    correlation_id text        NOT NULL,
    facts          jsonb       NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_waiting_by_return ON webhook_waiting (return_id);
CREATE INDEX webhook_waiting_by_age ON webhook_waiting (created_at);
