"""SQL of the returns service. Every function runs inside the caller's transaction."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from contracts.events import (
    Customer,
    Message,
    RequestedBy,
    ReturnLine,
    ReturnRequested,
)
from returnflow.db import Conn
from returnflow.outbox import enqueue
from services.returns.domain import STATUS_BY_EVENT, ReturnWebhook, analytics_payload, summarize


@dataclass(frozen=True)
class Intake:
    source: str
    delivery_id: str
    platform: str
    body: ReturnWebhook
    correlation_id: str


@dataclass(frozen=True)
class IntakeResult:
    return_id: UUID
    created: bool
    status: str


def _requested_event(return_id: UUID, it: Intake, now: datetime) -> ReturnRequested:
    # The body is already validated; build the event without validating every field again.
    b = it.body
    return ReturnRequested.model_construct(
        event_id=uuid.uuid4(),
        type="return.requested",
        version=1,
        occurred_at=now,
        return_id=return_id,
        correlation_id=it.correlation_id,
        shop_id=b.shop_id,
        platform=it.platform,
        platform_return_id=b.platform_return_id,
        order_id=b.order_id,
        kind=b.kind,
        customer=Customer.model_construct(**b.customer.model_dump()),
        currency=b.currency,
        paid_total=b.paid_total,
        lines=[ReturnLine.model_construct(**line.model_dump()) for line in b.lines],
        tracking_no=b.tracking_no,
        requested_by=RequestedBy.model_construct(**b.requested_by.model_dump()),
        requested_at=b.requested_at,
    )


async def accept_returns(conn: Conn, items: Sequence[Intake]) -> list[IntakeResult]:
    """Insert new returns with their lines, timeline entry and outbox event; recognise duplicates
    by delivery id or by (shop, platform_return_id). One round of statements for the whole batch."""
    now = await conn.fetchval("SELECT now()")
    known = {
        (r["source"], r["delivery_id"]): r["return_id"]
        for r in await conn.fetch(
            """SELECT d.source, d.delivery_id, d.return_id FROM deliveries d
               JOIN unnest($1::text[], $2::text[]) AS k(source, delivery_id) USING (source, delivery_id)""",
            [i.source for i in items],
            [i.delivery_id for i in items],
        )
    }
    # First item per (shop, platform_return_id) is the candidate; later ones share its outcome.
    candidates: dict[tuple[str, str], tuple[UUID, Intake]] = {}
    for it in items:
        if (it.source, it.delivery_id) in known:
            continue
        k = (it.body.shop_id, it.body.platform_return_id)
        if k not in candidates:
            candidates[k] = (uuid.uuid4(), it)
    created: set[UUID] = set()
    if candidates:
        cand = list(candidates.values())
        rows = await conn.fetch(
            """INSERT INTO returns (id, shop_id, platform, platform_return_id, order_id, kind, status,
                   status_rank, currency, paid_total, customer, requested_by, tracking_no, requested_at,
                   correlation_id)
               SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                   $7::text[], $8::int[], $9::text[], $10::bigint[], $11::jsonb[], $12::jsonb[], $13::text[],
                   $14::timestamptz[], $15::text[])
               ON CONFLICT (shop_id, platform_return_id) DO NOTHING
               RETURNING id""",
            [rid for rid, _ in cand],
            [it.body.shop_id for _, it in cand],
            [it.platform for _, it in cand],
            [it.body.platform_return_id for _, it in cand],
            [it.body.order_id for _, it in cand],
            [it.body.kind.value for _, it in cand],
            ["requested"] * len(cand),
            [STATUS_BY_EVENT["return.requested"][1]] * len(cand),
            [it.body.currency for _, it in cand],
            [it.body.paid_total for _, it in cand],
            [it.body.customer.model_dump() for _, it in cand],
            [it.body.requested_by.model_dump() for _, it in cand],
            [it.body.tracking_no for _, it in cand],
            [it.body.requested_at for _, it in cand],
            [it.correlation_id for _, it in cand],
        )
        created = {r["id"] for r in rows}
        lost = [k for k, (rid, _) in candidates.items() if rid not in created]
        if lost:  # already accepted earlier (or by a concurrent batch): answer with that return
            for r in await conn.fetch(
                """SELECT r.id, r.shop_id, r.platform_return_id FROM returns r
                   JOIN unnest($1::text[], $2::text[]) AS k(shop_id, platform_return_id)
                   USING (shop_id, platform_return_id)""",
                [k[0] for k in lost],
                [k[1] for k in lost],
            ):
                k = (r["shop_id"], r["platform_return_id"])
                candidates[k] = (r["id"], candidates[k][1])
        new = [(rid, it) for rid, it in candidates.values() if rid in created]
        if new:
            lines = [(rid, n, line) for rid, it in new for n, line in enumerate(it.body.lines, 1)]
            await conn.execute(
                """INSERT INTO return_lines (return_id, line_no, sku, qty, unit_price, reason, note)
                   SELECT * FROM unnest($1::uuid[], $2::int[], $3::text[], $4::int[], $5::bigint[],
                       $6::text[], $7::text[])""",
                [x[0] for x in lines],
                [x[1] for x in lines],
                [x[2].sku for x in lines],
                [x[2].qty for x in lines],
                [x[2].unit_price for x in lines],
                [x[2].reason for x in lines],
                [x[2].note for x in lines],
            )
            events = [_requested_event(rid, it, now) for rid, it in new]
            await enqueue(conn, events)
            await add_timeline(conn, events)
    results: list[IntakeResult] = []
    deliveries: list[tuple[str, str, UUID]] = []
    for it in items:
        rid = known.get((it.source, it.delivery_id))
        if rid is None:
            rid = candidates[(it.body.shop_id, it.body.platform_return_id)][0]
            deliveries.append((it.source, it.delivery_id, rid))
            is_new = rid in created
            created.discard(rid)  # only the first item of a new return reports "created"
        else:
            is_new = False
        results.append(IntakeResult(rid, is_new, "requested"))
    if deliveries:
        await conn.execute(
            """INSERT INTO deliveries (source, delivery_id, return_id)
               SELECT * FROM unnest($1::text[], $2::text[], $3::uuid[]) ON CONFLICT DO NOTHING""",
            [d[0] for d in deliveries],
            [d[1] for d in deliveries],
            [d[2] for d in deliveries],
        )
    return results


async def add_timeline(conn: Conn, events: Sequence[Message]) -> None:
    await add_timeline_raw(
        conn, [(e.return_id, str(e.event_id), e.occurred_at, e.type, e.model_dump(mode="json")) for e in events]
    )


async def add_timeline_raw(conn: Conn, entries: Sequence[tuple[UUID, str, datetime, str, dict[str, Any]]]) -> None:
    if not entries:
        return
    await conn.execute(
        """INSERT INTO timeline (return_id, event_id, occurred_at, type, summary, data)
           SELECT * FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::text[], $5::text[], $6::jsonb[])
           ON CONFLICT (return_id, event_id) DO NOTHING""",
        [e[0] for e in entries],
        [e[1] for e in entries],
        [e[2] for e in entries],
        [e[3] for e in entries],
        [summarize(e[3], e[4]) for e in entries],
        [analytics_payload(e[4]) for e in entries],
    )


async def advance_status(conn: Conn, updates: dict[UUID, tuple[str, int]]) -> None:
    """Move each return to a later status; an earlier-ranked status never overwrites a later one."""
    if not updates:
        return
    await conn.execute(
        """UPDATE returns r SET status = u.status, status_rank = u.rank, updated_at = now()
           FROM unnest($1::uuid[], $2::text[], $3::int[]) AS u(id, status, rank)
           WHERE r.id = u.id AND r.status_rank < u.rank""",
        list(updates),
        [s for s, _ in updates.values()],
        [r for _, r in updates.values()],
    )


async def find_delivery(conn: Conn, source: str, delivery_id: str) -> UUID | None:
    rid: UUID | None = await conn.fetchval(
        "SELECT return_id FROM deliveries WHERE source = $1 AND delivery_id = $2", source, delivery_id
    )
    return rid


async def record_delivery(conn: Conn, source: str, delivery_id: str, return_id: UUID) -> None:
    await conn.execute(
        "INSERT INTO deliveries (source, delivery_id, return_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        source,
        delivery_id,
        return_id,
    )


async def find_by_platform_id(
    conn: Conn, shop_id: str, platform_return_id: str, for_update: bool = False
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT id, status, status_rank, correlation_id FROM returns WHERE shop_id = $1 AND platform_return_id = $2"
        + (" FOR UPDATE" if for_update else ""),
        shop_id,
        platform_return_id,
    )


async def get_return(conn: Conn | asyncpg.Pool, return_id: UUID) -> dict[str, Any] | None:
    row = await conn.fetchrow("SELECT * FROM returns WHERE id = $1", return_id)
    if row is None:
        return None
    lines = await conn.fetch(
        "SELECT line_no, sku, qty, unit_price, reason, note FROM return_lines WHERE return_id = $1 ORDER BY line_no",
        return_id,
    )
    out = dict(row)
    out["lines"] = [dict(r) for r in lines]
    return out


async def get_timeline(conn: Conn | asyncpg.Pool, return_id: UUID) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT occurred_at, type, summary FROM timeline WHERE return_id = $1 ORDER BY occurred_at, id",
        return_id,
    )
    return [dict(r) for r in rows]
