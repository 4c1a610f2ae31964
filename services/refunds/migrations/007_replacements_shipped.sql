-- An exchange whose replacement left the warehouse can no longer be converted to a refund (the customer
-- would get the goods and the money). Like the other facts, it may arrive before its return.
CREATE TABLE replacements_shipped (
    return_id   uuid PRIMARY KEY,
    shipment_id text        NOT NULL,
    shipped_at  timestamptz NOT NULL
);

-- The warehouse has no replacement for an exchange: it waits in the people's queue (an escalation whose
-- approval converts it to a refund; a rejection waits for stock).
CREATE TABLE out_of_stock (
    return_id   uuid PRIMARY KEY,
    reported_at timestamptz NOT NULL
);
