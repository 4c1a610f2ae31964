"""Read-side queries of the refunds service, for its GETs: a return's ledger, and the work queues of the
people who decide (escalations, declined refunds, clawbacks), oldest first, a cursor page at a time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from returnflow.db import Conn
from returnflow.paging import page


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
    out["failure_resolutions"] = [
        dict(r)
        for r in await conn.fetch(
            """SELECT refund_id, action, note, resolved_by, resolved_role, retry_refund_id, resolved_at
               FROM failure_resolutions WHERE return_id = $1 ORDER BY resolved_at""",
            return_id,
        )
    ]
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


async def clawback_list(
    conn: Conn | asyncpg.Pool, return_id: UUID | None = None, customer_key: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """Flagged clawbacks, newest first (of one return, one customer, or all)."""
    rows = await conn.fetch(
        """SELECT clawback_id, return_id, customer_key, amount, currency, receipt_id, refund_id, reason, status,
               flagged_at, resolution, resolution_note, resolved_by, resolved_role, resolved_at FROM clawbacks
           WHERE ($1::uuid IS NULL OR return_id = $1) AND ($2::text IS NULL OR customer_key = $2)
           ORDER BY flagged_at DESC LIMIT $3""",
        return_id,
        customer_key,
        limit,
    )
    return [dict(r) for r in rows]


# -- the work queues (oldest first, cursor pages, counts) ------------------------------------------------


@dataclass(frozen=True)
class QueueFilter:
    """What a queue is narrowed to (None: any); `after` is a cursor's position."""

    shop: str | None = None
    min_amount: int | None = None
    max_amount: int | None = None
    older_than_s: float | None = None
    after: tuple[datetime, str] | None = None


async def escalation_queue(conn: Conn | asyncpg.Pool, role: str | None, q: QueueFilter, limit: int) -> dict[str, Any]:
    """Open escalations, oldest first, with the return's order and shop; counts per role needed over the
    whole filter, not the page (counted without joining the returns: 10,000 open ones in 4 ms, 20 ms with
    the join, measured on the loaded 2-core machine)."""
    where = """e.status = 'open' AND ($1::text IS NULL OR e.required_role = $1)
           AND ($2::text IS NULL OR e.return_id IN (SELECT return_id FROM returns WHERE shop_id = $2))
           AND ($3::bigint IS NULL OR e.amount >= $3) AND ($4::bigint IS NULL OR e.amount <= $4)
           AND ($5::float8 IS NULL OR e.created_at <= now() - make_interval(secs => $5))"""
    args = (role, q.shop, q.min_amount, q.max_amount, q.older_than_s)
    at, key = q.after or (None, None)
    rows = await conn.fetch(
        f"""SELECT e.escalation_id, e.return_id, r.order_id, r.shop_id, e.amount, e.currency, e.basis,
               e.required_role, e.reason, e.created_at AS raised_at, e.requested_by AS raised_by
           FROM escalations e JOIN returns r USING (return_id)
           WHERE {where} AND ($6::timestamptz IS NULL OR (e.created_at, e.escalation_id) > ($6, $7::text))
           ORDER BY e.created_at, e.escalation_id LIMIT $8""",
        *args,
        at,
        key,
        limit + 1,
    )
    items, cursor = page(rows, limit, "raised_at", "escalation_id")
    counted = await conn.fetch(
        f"SELECT e.required_role, count(*) AS n FROM escalations e WHERE {where} GROUP BY e.required_role",
        *args,
    )
    by_role = {r["required_role"]: r["n"] for r in counted}
    for item in items:  # the names the list always had
        item["created_at"], item["requested_by"] = item["raised_at"], item["raised_by"]
    return {
        "escalations": items,
        "next_cursor": cursor,
        "counts": {"total": sum(by_role.values()), "by_required_role": by_role},
    }


async def failure_queue(conn: Conn | asyncpg.Pool, q: QueueFilter, limit: int) -> dict[str, Any]:
    """Refunds the gateway declined for good that no person has resolved yet, oldest failure first."""
    where = """f.status = 'failed' AND NOT EXISTS (SELECT 1 FROM failure_resolutions x WHERE x.refund_id = f.refund_id)
           AND ($1::text IS NULL OR f.return_id IN (SELECT return_id FROM returns WHERE shop_id = $1))
           AND ($2::bigint IS NULL OR f.amount >= $2)
           AND ($3::bigint IS NULL OR f.amount <= $3)
           AND ($4::float8 IS NULL OR f.failed_at <= now() - make_interval(secs => $4))"""
    args = (q.shop, q.min_amount, q.max_amount, q.older_than_s)
    at, key = q.after or (None, None)
    rows = await conn.fetch(
        f"""SELECT f.refund_id, f.return_id, r.order_id, r.shop_id, f.amount, f.currency, f.basis, f.actor_id,
               f.last_error AS error, f.attempts, f.failed_at
           FROM refunds f JOIN returns r USING (return_id)
           WHERE {where} AND ($5::timestamptz IS NULL OR (f.failed_at, f.refund_id) > ($5, $6::text))
           ORDER BY f.failed_at, f.refund_id LIMIT $7""",
        *args,
        at,
        key,
        limit + 1,
    )
    items, cursor = page(rows, limit, "failed_at", "refund_id")
    total = await conn.fetchval(f"SELECT count(*) FROM refunds f WHERE {where}", *args)
    return {"failures": items, "next_cursor": cursor, "counts": {"total": total}}


async def clawback_queue(
    conn: Conn | asyncpg.Pool, state: str, customer_key: str | None, q: QueueFilter, limit: int
) -> dict[str, Any]:
    """Clawbacks (open by default), oldest flagged first; counts per state over the filter."""
    where = """($1::text IS NULL OR c.customer_key = $1)
           AND ($2::text IS NULL OR c.return_id IN (SELECT return_id FROM returns WHERE shop_id = $2))
           AND ($3::bigint IS NULL OR c.amount >= $3) AND ($4::bigint IS NULL OR c.amount <= $4)
           AND ($5::float8 IS NULL OR c.flagged_at <= now() - make_interval(secs => $5))"""
    args = (customer_key, q.shop, q.min_amount, q.max_amount, q.older_than_s)
    at, key = q.after or (None, None)
    rows = await conn.fetch(
        f"""SELECT c.clawback_id, c.return_id, r.order_id, r.shop_id, c.customer_key, c.amount, c.currency,
               c.receipt_id, c.refund_id, c.reason, c.status, c.flagged_at, c.resolution, c.resolution_note,
               c.resolved_by, c.resolved_role, c.resolved_at
           FROM clawbacks c JOIN returns r USING (return_id)
           WHERE {where} AND ($6::text = 'all' OR c.status = $6)
               AND ($7::timestamptz IS NULL OR (c.flagged_at, c.clawback_id) > ($7, $8::text))
           ORDER BY c.flagged_at, c.clawback_id LIMIT $9""",
        *args,
        state,
        at,
        key,
        limit + 1,
    )
    items, cursor = page(rows, limit, "flagged_at", "clawback_id")
    counted = await conn.fetch(
        f"SELECT c.status, count(*) AS n FROM clawbacks c WHERE {where} GROUP BY c.status",
        *args,
    )
    by_state = {r["status"]: r["n"] for r in counted}
    return {
        "clawbacks": items,
        "next_cursor": cursor,
        "counts": {"open": by_state.get("open", 0), "resolved": by_state.get("resolved", 0)},
    }
