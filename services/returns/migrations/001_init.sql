CREATE TABLE returns (
    id                 uuid PRIMARY KEY,
    shop_id            text        NOT NULL,
    platform           text        NOT NULL,
    platform_return_id text        NOT NULL,
    order_id           text        NOT NULL,
    kind               text        NOT NULL,
    status             text        NOT NULL,
    status_rank        int         NOT NULL,
    currency           char(3)     NOT NULL,
    paid_total         bigint      NOT NULL CHECK (paid_total >= 0),
    customer           jsonb       NOT NULL,
    requested_by       jsonb       NOT NULL,
    tracking_no        text,
    requested_at       timestamptz NOT NULL,
    correlation_id     text        NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (shop_id, platform_return_id)
);

CREATE TABLE return_lines (
    return_id  uuid   NOT NULL REFERENCES returns (id),
    line_no    int    NOT NULL,
    sku        text   NOT NULL,
    qty        int    NOT NULL CHECK (qty > 0),
    unit_price bigint NOT NULL CHECK (unit_price >= 0),
    reason     text   NOT NULL,
    note       text,
    PRIMARY KEY (return_id, line_no)
);

-- Webhook deliveries already accepted: the same delivery id again answers with the same return.
CREATE TABLE deliveries (
    source      text        NOT NULL,
    delivery_id text        NOT NULL,
    return_id   uuid        NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, delivery_id)
);

CREATE TABLE timeline (
    id          bigserial PRIMARY KEY,
    return_id   uuid        NOT NULL,
    event_id    text        NOT NULL,
    occurred_at timestamptz NOT NULL,
    type        text        NOT NULL,
    summary     text        NOT NULL,
    UNIQUE (return_id, event_id)
);
CREATE INDEX timeline_by_return ON timeline (return_id, occurred_at, id);
