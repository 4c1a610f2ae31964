"""SQL of the merchant webhooks: deliveries recorded (consumer side), claimed and settled (worker side), and
read (the deliveries GET, the backlogs, the idle check). Nothing decided here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from returnflow.backlogs import Backlog, backlogs_of
from returnflow.db import Conn
from returnflow.paging import page
from services.notify.webhook_rules import News, ReturnFacts

WEBHOOK_CHANNEL = "notify_webhooks"  # NOTIFY wakes the webhook worker when deliveries were recorded


@dataclass(frozen=True)
class NewDelivery:
    shop_id: str
    url: str
    news: News
    webhook_id: str
    body: bytes


# -- consumer side ---------------------------------------------------------------------------------------


async def return_facts(conn: Conn, return_ids: Sequence[UUID]) -> dict[UUID, ReturnFacts]:
    """The returns whose request notify has (their shop and the platform's ids)."""
    if not return_ids:
        return {}
    rows = await conn.fetch(
        """SELECT return_id, shop_id, platform_return_id, order_id, kind FROM returns
           WHERE return_id = ANY($1::uuid[]) AND known""",
        list(set(return_ids)),
    )
    return {r["return_id"]: ReturnFacts(r["shop_id"], r["platform_return_id"], r["order_id"], r["kind"]) for r in rows}


async def add_deliveries(conn: Conn, deliveries: Sequence[NewDelivery], now: datetime, give_up_at: datetime) -> int:
    """Record deliveries due now; one per (shop, endpoint, event): a duplicate event adds none."""
    if not deliveries:
        return 0
    status = await conn.execute(
        """INSERT INTO webhook_deliveries (shop_id, url, event_id, webhook_id, type, return_id, correlation_id, body,
               next_attempt_at, give_up_at, created_at)
           SELECT d.*, $9::timestamptz, $10::timestamptz, $9::timestamptz
           FROM unnest($1::text[], $2::text[], $3::uuid[], $4::text[], $5::text[], $6::uuid[], $7::text[], $8::bytea[])
                AS d(shop_id, url, event_id, webhook_id, type, return_id, correlation_id, body)
           ON CONFLICT (shop_id, url, event_id) DO NOTHING""",
        [d.shop_id for d in deliveries],
        [d.url for d in deliveries],
        [d.news.event_id for d in deliveries],
        [d.webhook_id for d in deliveries],
        [d.news.type for d in deliveries],
        [d.news.return_id for d in deliveries],
        [d.news.correlation_id for d in deliveries],
        [d.body for d in deliveries],
        now,
        give_up_at,
    )
    return int(status.split()[-1])


async def hold_waiting(conn: Conn, news: Sequence[News]) -> None:
    """Keep the news of returns whose request has not arrived yet (their shop is unknown)."""
    if not news:
        return
    await conn.execute(
        """INSERT INTO webhook_waiting (event_id, return_id, type, occurred_at, correlation_id, facts)
           SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[], $5::text[], $6::jsonb[])
           ON CONFLICT (event_id) DO NOTHING""",
        [n.event_id for n in news],
        [n.return_id for n in news],
        [n.type for n in news],
        [n.occurred_at for n in news],
        [n.correlation_id for n in news],
        [n.facts for n in news],
    )


async def take_waiting(conn: Conn, return_ids: Sequence[UUID]) -> list[News]:
    """The waiting news of these returns (now known), taken out of the waiting room."""
    if not return_ids:
        return []
    rows = await conn.fetch(
        """DELETE FROM webhook_waiting WHERE return_id = ANY($1::uuid[])
           RETURNING event_id, return_id, type, occurred_at, correlation_id, facts""",
        list(set(return_ids)),
    )
    return [
        News(r["event_id"], r["return_id"], r["type"], r["occurred_at"], r["correlation_id"], r["facts"]) for r in rows
    ]


async def sweep_waiting(conn: Conn, limit: int = 500) -> list[tuple[News, ReturnFacts]]:
    """Waiting news whose return became known (its request was applied while the news was being held, by
    another consumer in parallel), taken out with the return's facts."""
    rows = await conn.fetch(
        """DELETE FROM webhook_waiting w USING returns r
           WHERE w.event_id IN (SELECT w2.event_id FROM webhook_waiting w2 JOIN returns r2 USING (return_id)
                                WHERE r2.known LIMIT $1 FOR UPDATE OF w2 SKIP LOCKED)
             AND r.return_id = w.return_id
           RETURNING w.event_id, w.return_id, w.type, w.occurred_at, w.correlation_id, w.facts,
                     r.shop_id, r.platform_return_id, r.order_id, r.kind""",
        limit,
    )
    return [
        (
            News(r["event_id"], r["return_id"], r["type"], r["occurred_at"], r["correlation_id"], r["facts"]),
            ReturnFacts(r["shop_id"], r["platform_return_id"], r["order_id"], r["kind"]),
        )
        for r in rows
    ]


async def forget_old(pool: asyncpg.Pool, finished_before: datetime, waiting_before: datetime) -> tuple[int, int]:
    """Housekeeping: finished deliveries older than the log's retention, and news whose return's request never
    came (it could no longer be delivered before its deadline anyway)."""
    finished = await pool.execute(
        "DELETE FROM webhook_deliveries WHERE status IN ('delivered', 'failed') AND created_at < $1", finished_before
    )
    waiting = await pool.execute("DELETE FROM webhook_waiting WHERE created_at < $1", waiting_before)
    return int(finished.split()[-1]), int(waiting.split()[-1])


async def wake_worker(conn: Conn) -> None:
    await conn.execute("SELECT pg_notify($1, '')", WEBHOOK_CHANNEL)


# -- worker side ----------------------------------------------------------------------------------------


async def claim(pool: asyncpg.Pool, now: datetime, lease_until: datetime, limit: int) -> list[asyncpg.Record]:
    """Take up to `limit` due deliveries (pending and due, or sending with a lapsed lease) for one attempt each:
    `attempts` counts it, and is the claim's token when its outcome is written."""
    return list(
        await pool.fetch(
            """UPDATE webhook_deliveries d
               SET status = 'sending', lease_until = $2, attempts = d.attempts + 1, last_attempt_at = $1,
                   updated_at = now()
               WHERE d.id IN (
                   SELECT id FROM webhook_deliveries
                   WHERE (status = 'pending' AND next_attempt_at <= $1) OR (status = 'sending' AND lease_until <= $1)
                   ORDER BY coalesce(next_attempt_at, lease_until), id
                   LIMIT $3 FOR UPDATE SKIP LOCKED)
               RETURNING d.id, d.shop_id, d.url, d.webhook_id, d.type, d.return_id, d.correlation_id, d.body,
                         d.attempts, d.give_up_at""",
            now,
            lease_until,
            limit,
        )
    )


async def settle(
    pool: asyncpg.Pool,
    delivery_id: int,
    attempt: int,
    status: str,
    http_status: int | None,
    error: str | None,
    next_attempt_at: datetime | None,
    now: datetime,
) -> bool:
    """Write an attempt's outcome, unless the delivery was claimed again meanwhile (its lease lapsed). `error`
    None keeps the previous failure as `last_error`."""
    result = await pool.execute(
        """UPDATE webhook_deliveries
           SET status = $3::text, last_status = $4::int, last_error = coalesce($5::text, last_error),
               next_attempt_at = $6::timestamptz, lease_until = NULL,
               delivered_at = CASE WHEN $3::text = 'delivered' THEN $7::timestamptz END, updated_at = now()
           WHERE id = $1 AND attempts = $2 AND status = 'sending'""",
        delivery_id,
        attempt,
        status,
        http_status,
        error,
        next_attempt_at,
        now,
    )
    return result.endswith(" 1")


async def release(pool: asyncpg.Pool, claims: Sequence[tuple[int, int]], now: datetime) -> None:
    """Give back deliveries claimed but not attempted (the worker is stopping): due again at once, the
    attempt not counted."""
    if not claims:
        return
    await pool.execute(
        """UPDATE webhook_deliveries d SET status = 'pending', next_attempt_at = $3, lease_until = NULL,
               attempts = d.attempts - 1, updated_at = now()
           FROM unnest($1::bigint[], $2::int[]) AS c(id, attempt)
           WHERE d.id = c.id AND d.attempts = c.attempt AND d.status = 'sending'""",
        [c[0] for c in claims],
        [c[1] for c in claims],
        now,
    )


async def next_due(pool: asyncpg.Pool) -> datetime | None:
    value: datetime | None = await pool.fetchval(
        """SELECT least((SELECT min(next_attempt_at) FROM webhook_deliveries WHERE status = 'pending'),
                        (SELECT min(lease_until) FROM webhook_deliveries WHERE status = 'sending'))"""
    )
    return value


async def work_due(pool: asyncpg.Pool, now: datetime) -> bool:
    """A delivery due now or being attempted (a retry due in an hour is not work now)."""
    return bool(
        await pool.fetchval(
            """SELECT EXISTS (SELECT 1 FROM webhook_deliveries WHERE status = 'sending')
                   OR EXISTS (SELECT 1 FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= $1)""",
            now,
        )
    )


# -- read side ------------------------------------------------------------------------------------------

DELIVERY_STATUSES = ("pending", "sending", "delivered", "failed")


async def deliveries(
    pool: asyncpg.Pool,
    shop_id: str,
    status: str | None,
    event_type: str | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> dict[str, Any]:
    """A shop's deliveries, newest first, a page of `limit` with `next_cursor`."""
    at, key = after or (None, None)
    rows = await pool.fetch(
        """SELECT id, webhook_id, url, type, return_id, status, attempts, last_status, last_error, last_attempt_at,
                  next_attempt_at, delivered_at, give_up_at, created_at
           FROM webhook_deliveries
           WHERE shop_id = $1 AND ($2::text IS NULL OR status = $2) AND ($3::text IS NULL OR type = $3)
             AND ($4::timestamptz IS NULL OR (created_at, id) < ($4, $5::bigint))
           ORDER BY created_at DESC, id DESC LIMIT $6""",
        shop_id,
        status,
        event_type,
        at,
        int(key) if key is not None and key.isdigit() else 0,
        limit + 1,
    )
    items, cursor = page(rows, limit, "created_at", "id")
    for item in items:
        if item["status"] != "pending":
            item["next_attempt_at"] = None  # only a waiting delivery has a next attempt
    return {"shop_id": shop_id, "items": items, "next_cursor": cursor}


async def backlogs(conn: Conn) -> list[Backlog]:
    """Deliveries not delivered yet (age: since recorded), and of those the ones an endpoint already refused
    at least once (being retried: the merchant's endpoint is failing)."""
    row = await conn.fetchrow(
        """SELECT count(*), extract(epoch FROM now() - min(created_at)),
                  count(*) FILTER (WHERE attempts > 0 AND last_error IS NOT NULL),
                  extract(epoch FROM now() - min(created_at) FILTER (WHERE attempts > 0 AND last_error IS NOT NULL))
           FROM webhook_deliveries WHERE status IN ('pending', 'sending')"""
    )
    return backlogs_of(("webhooks_waiting", "webhooks_failing"), row)
