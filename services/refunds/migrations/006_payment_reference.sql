-- The original payment a refund goes back to at the provider (a Stripe PaymentIntent pi_… or charge
-- ch_…), carried by return.requested as `payment_reference`; returns requested before this migration
-- (or without one) are refunded against their order id, as they were.
ALTER TABLE returns ADD COLUMN payment_reference text;
