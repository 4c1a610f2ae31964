"""Read side of the notify service: the SMS of a return (GET /v1/returns/{return_id}/sms), and what needs a
person on open returns (GET /v1/notify/attention)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from returnflow.backlogs import Backlog, backlogs_of
from returnflow.db import Conn
from returnflow.logging import mask_phone
from returnflow.paging import page
from returnflow.shops import Shops
from services.notify import webhook_repository


async def sms_of_return(pool: asyncpg.Pool, return_id: UUID) -> dict[str, Any]:
    """Every message of a return (sent, waiting, not sent and why), in step order; the number masked."""
    rows = await pool.fetch(
        """SELECT m.step, m.kind, m.status, m.due_at, m.sent_at, m.reason, m.locale, m.body, m.provider,
                  m.provider_message_id, m.attempts, m.deferrals, m.last_error, m.delivery_status, m.params, r.phone
           FROM messages m JOIN returns r USING (return_id)
           WHERE m.return_id = $1 ORDER BY m.rank, m.step""",
        return_id,
    )
    messages = []
    for row in rows:
        message = dict(row)
        message["phone_masked"] = mask_phone(message.pop("phone") or "")
        messages.append(message)
    return {"return_id": str(return_id), "messages": messages}


async def backlogs(conn: Conn, shops: Shops | None = None) -> list[Backlog]:
    """What notify holds waiting (gauges): SMS due and not sent yet (age: how long past due), and queued SMS
    deferred at least once (quiet hours, pacing, the provider away)."""
    row = await conn.fetchrow(
        """SELECT
             count(*) FILTER (WHERE due_at <= now()),
             extract(epoch FROM now() - min(due_at) FILTER (WHERE due_at <= now())),
             count(*) FILTER (WHERE deferrals > 0),
             extract(epoch FROM now() - min(created_at) FILTER (WHERE deferrals > 0))
           FROM messages WHERE status = 'queued'"""
    )
    names = ("sms_queued", "sms_deferred")
    return backlogs_of(names, row)


# What needs a person on returns still open (not cancelled): an SMS the provider refused or could not deliver
# (the customer did not get the news: call them), and a customer whose number opted out (no more SMS: reach
# them another way). Oldest first, a cursor page at a time; counts per kind over the whole filter.
_ATTENTION = """
SELECT * FROM (
    SELECT 'sms_failed' AS kind, 'sms:' || m.id AS item_id, m.return_id, r.shop_id, r.order_id,
           m.updated_at AS at, m.step,  -- when notify learned it failed (delivery_at is the provider's clock)
           coalesce(m.delivery_error, m.last_error, m.delivery_status, m.reason) AS detail, r.phone
      FROM messages m JOIN returns r USING (return_id)
     WHERE r.known AND NOT r.closed
       AND (m.status = 'failed' OR m.delivery_status IN ('failed', 'undelivered'))
    UNION ALL
    SELECT 'opted_out', 'opt_out:' || r.return_id, r.return_id, r.shop_id, r.order_id, o.changed_at, NULL,
           o.keyword, r.phone
      FROM returns r JOIN opt_outs o ON o.phone = r.phone
     WHERE r.known AND NOT r.closed AND o.opted_out
) a
WHERE ($1::text IS NULL OR a.shop_id = $1) AND ($2::float8 IS NULL OR a.at <= now() - make_interval(secs => $2))
"""


async def attention(
    pool: asyncpg.Pool, shop: str | None, older_than_s: float | None, after: tuple[datetime, str] | None, limit: int
) -> dict[str, Any]:
    at, key = after or (None, None)
    rows = await pool.fetch(
        f"""{_ATTENTION} AND ($3::timestamptz IS NULL OR (a.at, a.item_id) > ($3, $4::text))
            ORDER BY a.at, a.item_id LIMIT $5""",
        shop,
        older_than_s,
        at,
        key,
        limit + 1,
    )
    items, cursor = page(rows, limit, "at", "item_id")
    for item in items:
        item["phone_masked"] = mask_phone(item.pop("phone") or "")
    counted = await pool.fetch(
        f"SELECT a.kind, count(*) AS n FROM ({_ATTENTION}) a GROUP BY a.kind", shop, older_than_s
    )
    by_kind = {r["kind"]: r["n"] for r in counted}
    return {
        "items": items,
        "next_cursor": cursor,
        "counts": {"sms_failed": by_kind.get("sms_failed", 0), "opted_out": by_kind.get("opted_out", 0)},
    }


async def all_backlogs(conn: Conn, shops: Shops | None = None) -> list[Backlog]:
    """The SMS backlogs and the merchant webhooks' (webhooks_waiting, webhooks_failing)."""
    return [*await backlogs(conn), *await webhook_repository.backlogs(conn)]
