-- The shop ships this exchange's replacement at the returned parcel's first moving scan
-- (exchange.replacement_released, from refunds): a shipment is accepted before the goods are received.
-- Like a conversion, it may arrive before the return's request (the row is made then).
ALTER TABLE parcels ADD COLUMN replacement_released_at timestamptz;
