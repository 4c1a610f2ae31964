-- The customer's page: each return is found by the SHA-256 of its link token (returnflow/links.py),
-- a link can be revoked, and the self-service tracking form counts its attempts (rate limit).
ALTER TABLE returns ADD COLUMN link_digest bytea, ADD COLUMN link_revoked_at timestamptz;
CREATE UNIQUE INDEX returns_by_link_digest ON returns (link_digest);

CREATE TABLE page_attempts (
    return_id uuid        NOT NULL,
    at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX page_attempts_by_return ON page_attempts (return_id, at);
