"""Read-side queries of the refunds service, for its GETs: a return's ledger, the escalations waiting for
a person, the clawbacks flagged for one."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from returnflow.backlogs import Backlog, backlogs_of
from returnflow.db import Conn


async def ledger_of(conn: Conn | asyncpg.Pool, return_id: UUID) -> dict[str, Any] | None:
    """A return's money: paid total and reserved, its refunds, escalations, decisions and clawbacks, and
    every command about it with its outcome (refused ones too, with the reason)."""
    row = await conn.fetchrow(
        "SELECT return_id, kind, currency, paid_total, reserved FROM returns WHERE return_id = $1", return_id
    )
    if row is None:
        return None
    out = dict(row)
    out["refunds"] = [
        dict(r)
        for r in await conn.fetch(
            """SELECT refund_id, cause, amount, basis, status, actor_id, actor_role, attempts, gateway_reference,
                   last_error, created_at, issued_at FROM refunds WHERE return_id = $1 ORDER BY created_at""",
            return_id,
        )
    ]
    out["escalations"] = [
        dict(r)
        for r in await conn.fetch(
            """SELECT escalation_id, amount, basis, required_role, requested_by, reason, status, closed_by,
                   created_at FROM escalations WHERE return_id = $1 ORDER BY created_at""",
            return_id,
        )
    ]
    out["decisions"] = [
        dict(r)
        for r in await conn.fetch(
            "SELECT cause, outcome, detail, decided_at FROM decisions WHERE return_id = $1 ORDER BY decided_at",
            return_id,
        )
    ]
    out["clawbacks"] = await clawback_list(conn, return_id=return_id)
    out["commands"] = [
        dict(r)
        for r in await conn.fetch(
            """SELECT command_id, source, actor_id, actor_role, action, amount, status, http_status, result,
                   message, required_role, correlation_id, created_at, decided_at
               FROM commands WHERE return_id = $1 ORDER BY created_at, command_id""",
            return_id,
        )
    ]
    return out


async def escalation_list(conn: Conn | asyncpg.Pool, role: str | None, limit: int) -> list[dict[str, Any]]:
    """Open escalations, oldest first (for one role, or all)."""
    rows = await conn.fetch(
        """SELECT escalation_id, return_id, amount, currency, basis, required_role, requested_by, reason, created_at
           FROM escalations WHERE status = 'open' AND ($1::text IS NULL OR required_role = $1)
           ORDER BY created_at LIMIT $2""",
        role,
        limit,
    )
    return [dict(r) for r in rows]


async def clawback_list(
    conn: Conn | asyncpg.Pool, return_id: UUID | None = None, customer_key: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """Flagged clawbacks, newest first (of one return, one customer, or all)."""
    rows = await conn.fetch(
        """SELECT clawback_id, return_id, customer_key, amount, currency, receipt_id, refund_id, reason, status,
               flagged_at FROM clawbacks
           WHERE ($1::uuid IS NULL OR return_id = $1) AND ($2::text IS NULL OR customer_key = $2)
           ORDER BY flagged_at DESC LIMIT $3""",
        return_id,
        customer_key,
        limit,
    )
    return [dict(r) for r in rows]


async def backlogs(conn: Conn) -> list[Backlog]:
    """What the refunds service holds waiting (gauges, refreshed by the runtime): refunds not yet paid, those
    whose outcome is unknown (asked at least once, no answer yet: `refunds.failed` with retryable true),
    escalations waiting for a person, clawbacks flagged for one (status 'open': nothing closes a clawback yet,
    so that is every clawback flagged). Partial indexes keep the open refunds and escalations cheap to count."""
    row = await conn.fetchrow(
        """SELECT
             count(*),
             extract(epoch FROM now() - min(created_at)),
             count(*) FILTER (WHERE attempts > 0),
             extract(epoch FROM now() - min(created_at) FILTER (WHERE attempts > 0)),
             (SELECT count(*) FROM escalations WHERE status = 'open'),
             (SELECT extract(epoch FROM now() - min(created_at)) FROM escalations WHERE status = 'open'),
             (SELECT count(*) FROM clawbacks WHERE status = 'open'),
             (SELECT extract(epoch FROM now() - min(flagged_at)) FROM clawbacks WHERE status = 'open')
           FROM refunds WHERE status = 'pending'"""
    )
    names = ("refunds_pending", "payments_unknown_outcome", "escalations_open", "clawbacks_open")
    return backlogs_of(names, row)
