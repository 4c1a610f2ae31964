-- Kuaidi100 sends pushes only for tracking numbers subscribed to (POST /poll). A row is written in the
-- transaction that records the tracking number; the subscriber worker asks Kuaidi100 and records the
-- answer: subscribed, failed (Kuaidi100 refused the data for good), or pending again later.
CREATE TABLE kuaidi100_subscriptions (
    tracking_no     text PRIMARY KEY,
    carrier         text,
    status          text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'subscribed', 'failed')),
    attempts        int         NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_until     timestamptz,
    last_error      text,
    correlation_id  text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX kuaidi100_subscriptions_due ON kuaidi100_subscriptions (next_attempt_at) WHERE status = 'pending';
