"""SQL writes (and the reads they need) of the returns service. Every function runs inside the
caller's transaction, handles a whole batch in one statement, and decides nothing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from returnflow.db import Conn
from services.returns.rules import Intake, Status
from services.returns.timeline import TimelineEntry

Key = tuple[str, str]


async def now(conn: Conn) -> datetime:
    at: datetime = await conn.fetchval("SELECT now()")
    return at


async def known_deliveries(conn: Conn, deliveries: Sequence[Key]) -> dict[Key, UUID]:
    """(source, delivery id) -> the return an earlier delivery named."""
    rows = await conn.fetch(
        """SELECT d.source, d.delivery_id, d.return_id FROM deliveries d
           JOIN unnest($1::text[], $2::text[]) AS k(source, delivery_id) USING (source, delivery_id)""",
        [d[0] for d in deliveries],
        [d[1] for d in deliveries],
    )
    return {(r["source"], r["delivery_id"]): r["return_id"] for r in rows}


async def insert_returns(conn: Conn, new: Sequence[tuple[UUID, Intake]], status: Status) -> set[UUID]:
    """Insert these returns; those whose (shop, platform return id) exists already are skipped. The ids
    inserted."""
    if not new:
        return set()
    rows = await conn.fetch(
        """INSERT INTO returns (id, shop_id, platform, platform_return_id, order_id, kind, status,
               status_rank, currency, paid_total, customer, requested_by, tracking_no, requested_at,
               correlation_id)
           SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
               $7::text[], $8::int[], $9::text[], $10::bigint[], $11::jsonb[], $12::jsonb[], $13::text[],
               $14::timestamptz[], $15::text[])
           ON CONFLICT (shop_id, platform_return_id) DO NOTHING
           RETURNING id""",
        [rid for rid, _ in new],
        [it.body.shop_id for _, it in new],
        [it.platform for _, it in new],
        [it.body.platform_return_id for _, it in new],
        [it.body.order_id for _, it in new],
        [it.body.kind.value for _, it in new],
        [status.name] * len(new),
        [status.rank] * len(new),
        [it.body.currency for _, it in new],
        [it.body.paid_total for _, it in new],
        [it.body.customer.model_dump() for _, it in new],
        [it.body.requested_by.model_dump() for _, it in new],
        [it.body.tracking_no for _, it in new],
        [it.body.requested_at for _, it in new],
        [it.correlation_id for _, it in new],
    )
    return {r["id"] for r in rows}


async def returns_by_platform_key(conn: Conn, keys: Sequence[Key]) -> dict[Key, UUID]:
    """(shop, platform return id) -> return id, for those that exist."""
    if not keys:
        return {}
    rows = await conn.fetch(
        """SELECT r.id, r.shop_id, r.platform_return_id FROM returns r
           JOIN unnest($1::text[], $2::text[]) AS k(shop_id, platform_return_id)
           USING (shop_id, platform_return_id)""",
        [k[0] for k in keys],
        [k[1] for k in keys],
    )
    return {(r["shop_id"], r["platform_return_id"]): r["id"] for r in rows}


async def insert_lines(conn: Conn, new: Sequence[tuple[UUID, Intake]]) -> None:
    lines = [(rid, n, line) for rid, it in new for n, line in enumerate(it.body.lines, 1)]
    if not lines:
        return
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


async def record_deliveries(conn: Conn, deliveries: Sequence[tuple[str, str, UUID]]) -> None:
    """Remember (source, delivery id) -> return id, so a webhook delivered again is a duplicate."""
    if not deliveries:
        return
    await conn.execute(
        """INSERT INTO deliveries (source, delivery_id, return_id)
           SELECT * FROM unnest($1::text[], $2::text[], $3::uuid[]) ON CONFLICT DO NOTHING""",
        [d[0] for d in deliveries],
        [d[1] for d in deliveries],
        [d[2] for d in deliveries],
    )


async def find_delivery(conn: Conn, source: str, delivery_id: str) -> UUID | None:
    rid: UUID | None = await conn.fetchval(
        "SELECT return_id FROM deliveries WHERE source = $1 AND delivery_id = $2", source, delivery_id
    )
    return rid


async def add_timeline(conn: Conn, entries: Sequence[TimelineEntry]) -> None:
    """Add entries; one already on its return's timeline (same event id) is skipped."""
    if not entries:
        return
    await conn.execute(
        """INSERT INTO timeline (return_id, event_id, occurred_at, type, summary, data)
           SELECT * FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::text[], $5::text[], $6::jsonb[])
           ON CONFLICT (return_id, event_id) DO NOTHING""",
        [e.return_id for e in entries],
        [e.event_id for e in entries],
        [e.occurred_at for e in entries],
        [e.type for e in entries],
        [e.summary for e in entries],
        [e.data for e in entries],
    )


async def advance_status(conn: Conn, updates: dict[UUID, Status]) -> None:
    """Move each return to this status if it ranks above the one it has."""
    if not updates:
        return
    await conn.execute(
        """UPDATE returns r SET status = u.status, status_rank = u.rank, updated_at = now()
           FROM unnest($1::uuid[], $2::text[], $3::int[]) AS u(id, status, rank)
           WHERE r.id = u.id AND r.status_rank < u.rank""",
        list(updates),
        [s.name for s in updates.values()],
        [s.rank for s in updates.values()],
    )


@dataclass(frozen=True)
class ReturnRef:
    id: UUID
    status: Status


async def lock_by_platform_key(conn: Conn, shop_id: str, platform_return_id: str) -> ReturnRef | None:
    """The return a platform names, locked until the transaction ends."""
    row = await conn.fetchrow(
        """SELECT id, status, status_rank FROM returns WHERE shop_id = $1 AND platform_return_id = $2
           FOR UPDATE""",
        shop_id,
        platform_return_id,
    )
    return ReturnRef(row["id"], Status(row["status"], row["status_rank"])) if row is not None else None


async def set_tracking_no(conn: Conn, return_id: UUID, tracking_no: str) -> None:
    await conn.execute("UPDATE returns SET tracking_no = $2, updated_at = now() WHERE id = $1", return_id, tracking_no)
