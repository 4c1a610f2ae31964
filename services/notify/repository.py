"""SQL of the notify service: reads and writes, nothing decided here. Every function runs inside the
caller's transaction; batches use multi-row statements (unnest)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

from contracts.events import ReturnRequested
from returnflow.db import Conn
from services.notify.rules import Planned

SENDER_LOCK = "returnflow.notify.claim"
SENDER_CHANNEL = "notify_sender"  # NOTIFY wakes the sender when messages were scheduled


# -- consumer side ---------------------------------------------------------------------------------------


async def mark_returns(conn: Conn, moving: Sequence[UUID], closed: Sequence[UUID]) -> None:
    """Remember that goods are moving (or back, or refunded) / that a return was cancelled, even
    for a return whose request has not arrived yet."""
    ids = list(dict.fromkeys([*moving, *closed]))
    if not ids:
        return
    mv, cl = set(moving), set(closed)
    await conn.execute(
        """INSERT INTO returns (return_id, goods_moving, closed)
           SELECT * FROM unnest($1::uuid[], $2::bool[], $3::bool[])
           ON CONFLICT (return_id) DO UPDATE SET
               goods_moving = returns.goods_moving OR EXCLUDED.goods_moving,
               closed = returns.closed OR EXCLUDED.closed,
               updated_at = now()""",
        ids,
        [i in mv for i in ids],
        [i in cl for i in ids],
    )


async def upsert_requested(conn: Conn, requested: Sequence[ReturnRequested]) -> dict[UUID, asyncpg.Record]:
    """Record each return's recipient; returns the flags (goods_moving, closed) as they now stand."""
    if not requested:
        return {}
    result = await conn.fetch(
        """INSERT INTO returns (return_id, known, shop_id, shop_name, kind, order_id, platform_return_id, items,
               phone, locale, timezone, requested_at, correlation_id)
           SELECT r.id, true, r.shop_id, r.shop_name, r.kind, r.order_id, r.prid, r.items, r.phone, r.locale,
                  r.tz, r.requested_at, r.cid
           FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int[],
                       $8::text[], $9::text[], $10::text[], $11::timestamptz[], $12::text[])
                AS r(id, shop_id, shop_name, kind, order_id, prid, items, phone, locale, tz, requested_at, cid)
           ON CONFLICT (return_id) DO UPDATE SET
               known = true, shop_id = EXCLUDED.shop_id, shop_name = EXCLUDED.shop_name, kind = EXCLUDED.kind,
               order_id = EXCLUDED.order_id, platform_return_id = EXCLUDED.platform_return_id,
               items = EXCLUDED.items, phone = EXCLUDED.phone, locale = EXCLUDED.locale,
               timezone = EXCLUDED.timezone, requested_at = EXCLUDED.requested_at,
               correlation_id = EXCLUDED.correlation_id, updated_at = now()
           RETURNING return_id, kind, goods_moving, closed""",
        [e.return_id for e in requested],
        [e.shop_id for e in requested],
        [e.shop_name or "" for e in requested],
        [e.kind.value for e in requested],
        [e.order_id for e in requested],
        [e.platform_return_id for e in requested],
        [sum(line.qty for line in e.lines) for e in requested],
        [e.customer.phone for e in requested],
        [e.customer.locale for e in requested],
        [e.customer.timezone for e in requested],
        [e.requested_at for e in requested],
        [e.correlation_id for e in requested],
    )
    return {r["return_id"]: r for r in result}


async def add_messages(conn: Conn, msgs: Sequence[Planned]) -> int:
    """Insert messages; a (return, step) that already has one keeps it (one message per step)."""
    if not msgs:
        return 0
    status = await conn.execute(
        """INSERT INTO messages (return_id, step, kind, rank, due_at, params, correlation_id, source_event_id)
           SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int[], $5::timestamptz[], $6::jsonb[],
                                $7::text[], $8::text[])
           ON CONFLICT (return_id, step) DO NOTHING""",
        [m.return_id for m in msgs],
        [m.step for m in msgs],
        [m.kind for m in msgs],
        [m.rank for m in msgs],
        [m.due_at for m in msgs],
        [m.params for m in msgs],
        [m.correlation_id for m in msgs],
        [m.source_event_id for m in msgs],
    )
    return int(status.split()[-1])


async def cancel_reminders(conn: Conn, return_ids: Sequence[UUID], reason: str = "not_needed") -> None:
    if not return_ids:
        return
    await conn.execute(
        """UPDATE messages SET status = 'cancelled', reason = $2, updated_at = now()
           WHERE return_id = ANY($1::uuid[]) AND kind = 'reminder' AND status = 'queued'""",
        list(set(return_ids)),
        reason,
    )


async def wake_sender(conn: Conn) -> None:
    await conn.execute("SELECT pg_notify($1, '')", SENDER_CHANNEL)


# -- sender side ----------------------------------------------------------------------------------------


async def lock_claims(conn: Conn) -> None:
    """Claims are serialized (they are short: no I/O inside), so caps and pacing are exact across
    processes; sending happens after the claim commits, in parallel."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", SENDER_LOCK)


async def due_messages(conn: Conn, now: datetime, limit: int) -> list[asyncpg.Record]:
    """Queued messages that are due, and messages whose sender's lease ran out (it crashed), for
    returns whose recipient is known; locked for this claim."""
    return await conn.fetch(
        """SELECT m.id, m.return_id, m.step, m.kind, m.rank, m.due_at, m.params, m.correlation_id, m.attempts,
                  m.status, r.phone, r.locale, r.timezone, r.shop_id, r.shop_name, r.kind AS return_kind,
                  r.order_id, r.platform_return_id, r.items, r.requested_at, r.closed
           FROM messages m JOIN returns r USING (return_id)
           WHERE r.known AND (
                 (m.status = 'queued' AND m.due_at <= $1) OR (m.status = 'sending' AND m.lease_until <= $1))
           ORDER BY m.due_at, m.rank, m.id
           LIMIT $2
           FOR UPDATE OF m SKIP LOCKED""",
        now,
        limit,
    )


async def opted_out(conn: Conn, phones: Sequence[str]) -> set[str]:
    rows = await conn.fetch("SELECT phone FROM opt_outs WHERE phone = ANY($1::text[]) AND opted_out", list(set(phones)))
    return {r["phone"] for r in rows}


async def sent_steps(conn: Conn, return_ids: Sequence[UUID], exclude: Sequence[int]) -> dict[UUID, set[str]]:
    rows = await conn.fetch(
        """SELECT return_id, step FROM messages
           WHERE return_id = ANY($1::uuid[]) AND status IN ('sending', 'sent') AND NOT (id = ANY($2::bigint[]))""",
        list(set(return_ids)),
        list(exclude),
    )
    out: dict[UUID, set[str]] = {}
    for r in rows:
        out.setdefault(r["return_id"], set()).add(r["step"])
    return out


async def sent_counts(
    conn: Conn, windows: Sequence[tuple[str, datetime, datetime]], exclude: Sequence[int]
) -> dict[tuple[str, datetime], int]:
    """Messages sent (or being sent) to each number within each [start, end) window."""
    if not windows:
        return {}
    rows = await conn.fetch(
        """SELECT w.phone, w.start_at, count(m.id) AS n
           FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[]) AS w(phone, start_at, end_at)
           LEFT JOIN returns r ON r.phone = w.phone
           LEFT JOIN messages m ON m.return_id = r.return_id AND m.status IN ('sending', 'sent')
                AND m.claimed_at >= w.start_at AND m.claimed_at < w.end_at AND NOT (m.id = ANY($4::bigint[]))
           GROUP BY w.phone, w.start_at""",
        [w[0] for w in windows],
        [w[1] for w in windows],
        [w[2] for w in windows],
        list(exclude),
    )
    return {(r["phone"], r["start_at"]): int(r["n"]) for r in rows}


async def pacing_tat(conn: Conn, sender: str) -> datetime | None:
    tat: datetime | None = await conn.fetchval("SELECT tat FROM sender_pacing WHERE sender = $1 FOR UPDATE", sender)
    return tat


async def set_pacing_tat(conn: Conn, sender: str, tat: datetime) -> None:
    await conn.execute(
        """INSERT INTO sender_pacing (sender, tat) VALUES ($1, $2)
           ON CONFLICT (sender) DO UPDATE SET tat = EXCLUDED.tat""",
        sender,
        tat,
    )


@dataclass(frozen=True)
class Claim:
    id: int
    locale: str
    body: str
    send_at: datetime
    lease_until: datetime


async def mark_sending(conn: Conn, now: datetime, provider: str, sender: str, claims: Sequence[Claim]) -> None:
    """Claimed messages: rendered, with their pacing slot and lease."""
    if not claims:
        return
    await conn.execute(
        """UPDATE messages m SET status = 'sending', locale = c.locale, body = c.body, send_at = c.send_at,
               lease_until = c.lease_until, claimed_at = $2, provider = $3, sender = $4, updated_at = now()
           FROM unnest($1::bigint[], $5::text[], $6::text[], $7::timestamptz[], $8::timestamptz[])
                AS c(id, locale, body, send_at, lease_until)
           WHERE m.id = c.id""",
        [c.id for c in claims],
        now,
        provider,
        sender,
        [c.locale for c in claims],
        [c.body for c in claims],
        [c.send_at for c in claims],
        [c.lease_until for c in claims],
    )


async def defer(conn: Conn, deferrals: Sequence[tuple[int, datetime, str]]) -> None:
    """(message id, until, reason): queued again, due then."""
    if not deferrals:
        return
    await conn.execute(
        """UPDATE messages m SET status = 'queued', due_at = d.until, reason = d.reason,
               deferrals = m.deferrals + 1, lease_until = NULL, updated_at = now()
           FROM unnest($1::bigint[], $2::timestamptz[], $3::text[]) AS d(id, until, reason)
           WHERE m.id = d.id""",
        [d[0] for d in deferrals],
        [d[1] for d in deferrals],
        [d[2] for d in deferrals],
    )


async def close_unsent(
    conn: Conn, suppressions: Sequence[tuple[int, str]], failures: Sequence[tuple[int, str]]
) -> None:
    """(message id, reason): suppressed or failed without a send."""
    finals = [(i, "suppressed", r) for i, r in suppressions] + [(i, "failed", e) for i, e in failures]
    if not finals:
        return
    await conn.execute(
        """UPDATE messages m SET status = f.status, reason = f.reason, lease_until = NULL, updated_at = now()
           FROM unnest($1::bigint[], $2::text[], $3::text[]) AS f(id, status, reason)
           WHERE m.id = f.id""",
        [f[0] for f in finals],
        [f[1] for f in finals],
        [f[2] for f in finals],
    )


async def record_sent_many(conn: Conn, sent: Sequence[tuple[int, str, datetime]]) -> set[int]:
    """Mark (message id, provider message id, sent at) as sent; returns the ids that were still sending."""
    if not sent:
        return set()
    rows = await conn.fetch(
        """UPDATE messages m SET status = 'sent', provider_message_id = s.pid, sent_at = s.at,
               attempts = m.attempts + 1, lease_until = NULL, last_error = NULL, updated_at = now()
           FROM unnest($1::bigint[], $2::text[], $3::timestamptz[]) AS s(id, pid, at)
           WHERE m.id = s.id AND m.status = 'sending'
           RETURNING m.id""",
        [x[0] for x in sent],
        [x[1] for x in sent],
        [x[2] for x in sent],
    )
    return {r["id"] for r in rows}


async def record_failed(conn: Conn, message_id: int, error: str) -> bool:
    status = await conn.execute(
        """UPDATE messages SET status = 'failed', reason = 'provider_refused', last_error = $2,
               attempts = attempts + 1, lease_until = NULL, updated_at = now()
           WHERE id = $1 AND status = 'sending'""",
        message_id,
        error[:1000],
    )
    return status.endswith(" 1")


async def attempts(conn: Conn, message_id: int) -> int:
    """Sends of this message tried so far."""
    n: int | None = await conn.fetchval("SELECT attempts FROM messages WHERE id = $1", message_id)
    return int(n or 0)


async def record_retry(conn: Conn, message_id: int, error: str, due_at: datetime) -> int | None:
    """Back to the queue after a transient failure; returns the attempts made so far."""
    attempts: int | None = await conn.fetchval(
        """UPDATE messages SET status = 'queued', due_at = $3, last_error = $2, attempts = attempts + 1,
               lease_until = NULL, send_at = NULL, updated_at = now()
           WHERE id = $1 AND status = 'sending' RETURNING attempts""",
        message_id,
        error[:1000],
        due_at,
    )
    return attempts


async def release(conn: Conn | asyncpg.Pool, ids: Sequence[int], not_before: datetime | None = None) -> None:
    """Claimed but not attempted (shutdown, or an earlier step of the return must go first)."""
    if ids:
        await conn.execute(
            """UPDATE messages SET status = 'queued', lease_until = NULL, send_at = NULL, updated_at = now(),
                   due_at = GREATEST(due_at, COALESCE($2, due_at))
               WHERE id = ANY($1::bigint[]) AND status = 'sending'""",
            list(ids),
            not_before,
        )


async def next_due(conn: Conn | asyncpg.Pool) -> datetime | None:
    value: datetime | None = await conn.fetchval(
        """SELECT min(t) FROM (
               SELECT min(m.due_at) AS t FROM messages m JOIN returns r USING (return_id)
               WHERE m.status = 'queued' AND r.known
               UNION ALL SELECT min(lease_until) FROM messages WHERE status = 'sending') x"""
    )
    return value


async def work_due(conn: Conn | asyncpg.Pool, now: datetime) -> bool:
    """Whether the sender has something to do now: a message due for a known recipient, or one being sent."""
    found: bool = await conn.fetchval(
        """SELECT EXISTS (SELECT 1 FROM messages m JOIN returns r USING (return_id)
               WHERE r.known AND ((m.status = 'queued' AND m.due_at <= $1) OR m.status = 'sending'))""",
        now,
    )
    return found


# -- webhooks ---------------------------------------------------------------------------------------------


async def record_inbound(
    conn: Conn, provider: str, provider_id: str, phone: str, keyword: str | None, now: datetime
) -> bool:
    """True the first time this inbound message is seen."""
    fresh = await conn.fetchval(
        """INSERT INTO inbound_sms (provider, provider_id, phone, keyword, received_at)
           VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING true""",
        provider,
        provider_id,
        phone,
        keyword,
        now,
    )
    return bool(fresh)


async def set_consent(conn: Conn, phone: str, opted_out: bool, keyword: str, provider: str, now: datetime) -> None:
    await conn.execute(
        """INSERT INTO opt_outs (phone, opted_out, keyword, provider, changed_at) VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (phone) DO UPDATE SET opted_out = EXCLUDED.opted_out, keyword = EXCLUDED.keyword,
               provider = EXCLUDED.provider, changed_at = EXCLUDED.changed_at
           WHERE opt_outs.changed_at <= EXCLUDED.changed_at""",
        phone,
        opted_out,
        keyword,
        provider,
        now,
    )


async def record_delivery(
    conn: Conn, provider: str, provider_message_id: str, status: str, error: str | None, now: datetime
) -> asyncpg.Record | None:
    """Store a delivery receipt; returns the message with its previous delivery status, or None when
    the id is unknown (another system's message, or a receipt that arrived before our own record)."""
    row = await conn.fetchrow(
        """SELECT m.id, m.return_id, m.step, m.locale, m.correlation_id, m.delivery_status, r.phone
           FROM messages m JOIN returns r USING (return_id)
           WHERE m.provider = $1 AND m.provider_message_id = $2 FOR UPDATE OF m""",
        provider,
        provider_message_id,
    )
    if row is None:
        return None
    await conn.execute(
        """UPDATE messages SET delivery_status = $2, delivery_error = $3, delivery_at = $4, updated_at = now()
           WHERE id = $1""",
        row["id"],
        status,
        error,
        now,
    )
    return row
