-- An exchange whose replacement left the warehouse can no longer be converted to a refund (the customer
-- would get the goods and the money). Like the other facts, it may arrive before its return.
CREATE TABLE replacements_shipped (
    return_id   uuid PRIMARY KEY,
    shipment_id text        NOT NULL,
    shipped_at  timestamptz NOT NULL
);
