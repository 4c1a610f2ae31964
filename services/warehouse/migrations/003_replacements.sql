-- Exchanges: the SKU the customer asked for instead (NULL: the same SKU), the replacement shipped back
-- (one per exchange, so at most one per exchange line) and its outgoing parcel's scans.
ALTER TABLE parcel_lines ADD COLUMN replacement_sku text;

CREATE TABLE replacements (
    return_id         uuid PRIMARY KEY REFERENCES parcels (return_id),
    shipment_id       text        NOT NULL UNIQUE,
    warehouse_id      text        NOT NULL,
    device_id         text        NOT NULL,
    packed_by         text        NOT NULL,
    carrier           text        NOT NULL,
    tracking_no       text        NOT NULL UNIQUE,
    shipped_at        timestamptz NOT NULL,
    fingerprint       text        NOT NULL,
    lines             jsonb       NOT NULL,
    correlation_id    text        NOT NULL,
    delivered_at      timestamptz,
    delivered_scan_id text,
    created_at        timestamptz NOT NULL DEFAULT now()
);

-- No replacement in stock: reported once per exchange, for a person to decide.
CREATE TABLE out_of_stock (
    return_id    uuid PRIMARY KEY REFERENCES parcels (return_id),
    skus         text[]      NOT NULL,
    warehouse_id text        NOT NULL,
    reported_by  text        NOT NULL,
    note         text,
    reported_at  timestamptz NOT NULL DEFAULT now()
);

-- A scan of an outgoing replacement parcel (matched by its tracking number), apart from the return's own.
ALTER TABLE scans ADD COLUMN outgoing boolean NOT NULL DEFAULT false;

-- A person converted the exchange to a refund: no replacement is shipped any more.
ALTER TABLE parcels ADD COLUMN converted_at timestamptz;
