-- A retry under an Idempotency-Key is answered with the first answer as it was sent: its amount (an
-- approve without one answers with the escalated amount; `amount` is the request's) and the field a
-- refusal named. Rows answered before this migration replay the request's amount, as they did.
ALTER TABLE commands ADD COLUMN answer_amount bigint, ADD COLUMN answer_field text;
UPDATE commands SET answer_amount = amount WHERE status = 'done';
