-- The inbound parcel of a return. A row can exist before its return.requested arrives (a tracking
-- number registered first); `requested` says whether the request itself was seen.
CREATE TABLE parcels (
    return_id            uuid PRIMARY KEY,
    requested            boolean     NOT NULL DEFAULT false,
    kind                 text,
    shop_id              text,
    currency             char(3),
    tracking_no          text,
    carrier              text,
    correlation_id       text,
    cancelled_at         timestamptz,
    first_moving_scan_id text,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);
-- One return per tracking number: a scan matches exactly one parcel.
CREATE UNIQUE INDEX parcels_tracking_no ON parcels (tracking_no) WHERE tracking_no IS NOT NULL;

CREATE TABLE parcel_lines (
    return_id  uuid   NOT NULL REFERENCES parcels (return_id),
    line_no    int    NOT NULL,
    sku        text   NOT NULL,
    qty        int    NOT NULL CHECK (qty > 0),
    unit_price bigint NOT NULL CHECK (unit_price >= 0),
    PRIMARY KEY (return_id, line_no)
);

-- Every distinct carrier scan. return_id NULL = parked: no parcel has this tracking number yet.
CREATE TABLE scans (
    scan_id        text PRIMARY KEY,
    carrier        text        NOT NULL,
    tracking_no    text        NOT NULL,
    scan_code      text        NOT NULL,
    scanned_at     timestamptz NOT NULL,
    location       text,
    correlation_id text        NOT NULL,
    received_at    timestamptz NOT NULL DEFAULT now(),
    return_id      uuid,
    matched_at     timestamptz,
    first_moving   boolean     NOT NULL DEFAULT false
);
CREATE INDEX scans_parked ON scans (tracking_no) WHERE return_id IS NULL;
CREATE INDEX scans_by_return ON scans (return_id, scanned_at) WHERE return_id IS NOT NULL;

-- One receipt per return: a second one is refused (409), never merged or overwritten.
CREATE TABLE receipts (
    receipt_id   text PRIMARY KEY,
    return_id    uuid        NOT NULL UNIQUE REFERENCES parcels (return_id),
    warehouse_id text        NOT NULL,
    device_id    text        NOT NULL,
    inspector_id text        NOT NULL,
    received_at  timestamptz NOT NULL,
    fingerprint  text        NOT NULL,
    lines        jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
