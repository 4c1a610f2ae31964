-- People's sessions. The cookie holds a random id; only its sha256 is kept here. The person's upstream
-- token is sealed (AES-256-GCM, key from RETURNFLOW_WORKBENCH_SESSION_KEY): a copy of this table alone
-- signs no one in anywhere.
CREATE TABLE sessions (
    id_hash      bytea       PRIMARY KEY,
    person_id    text        NOT NULL,
    role         text        NOT NULL,
    sealed_token bytea       NOT NULL,
    csrf_token   text        NOT NULL,
    limits       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
CREATE INDEX sessions_expiry ON sessions (expires_at);
