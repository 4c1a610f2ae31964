"""Shared runtime plumbing for every returnflow service.

Settings, logging, PostgreSQL pool and migrations, the transactional outbox and its relay,
the idempotent consumer with retries and DLQ, webhook signatures, the service app factory,
and the embedded stack (`returnflow up`). Services import from here; never from each other.
"""
