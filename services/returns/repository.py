"""SQL writes (and the reads they need) of the returns service. Every function runs inside the
caller's transaction, handles a whole batch in one statement, and decides nothing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson

from returnflow.db import Conn
from services.returns.rules import Fact, Intake, Status
from services.returns.timeline import TimelineEntry

Key = tuple[str, str]


def _unnest(first: int, *types: str) -> str:
    """`unnest($first::type, ...)`: the parameters of one batch insert, numbered from `first`."""
    return "unnest(" + ", ".join(f"${first + i}::{t}" for i, t in enumerate(types)) + ")"


_KNOWN_DELIVERIES = """SELECT d.source, d.delivery_id, d.return_id FROM deliveries d
    JOIN unnest($1::text[], $2::text[]) AS k(source, delivery_id) USING (source, delivery_id)"""


async def known_deliveries(conn: Conn, deliveries: Sequence[Key]) -> dict[Key, UUID]:
    """(source, delivery id) -> the return an earlier delivery named."""
    rows = await conn.fetch(_KNOWN_DELIVERIES, [d[0] for d in deliveries], [d[1] for d in deliveries])
    return {(r["source"], r["delivery_id"]): r["return_id"] for r in rows}


async def now_and_known_deliveries(conn: Conn, deliveries: Sequence[Key]) -> tuple[datetime, dict[Key, UUID]]:
    """The transaction's time and `known_deliveries`, in one round trip (the intake's first statement)."""
    rows = await conn.fetch(
        f"SELECT now() AS now, d.* FROM (VALUES (1)) AS one(x) LEFT JOIN ({_KNOWN_DELIVERIES}) d ON true",
        [d[0] for d in deliveries],
        [d[1] for d in deliveries],
    )
    known = {(r["source"], r["delivery_id"]): r["return_id"] for r in rows if r["source"] is not None}
    return rows[0]["now"], known


async def insert_returns(
    conn: Conn, new: Sequence[tuple[UUID, Intake]], status: Status, link_digests: dict[UUID, bytes] | None = None
) -> set[UUID]:
    """Insert these returns (with the digest of each one's customer link, when known); those whose
    (shop, platform return id) exists already are skipped. The ids inserted."""
    if not new:
        return set()
    rows = await conn.fetch(
        """INSERT INTO returns (id, shop_id, platform, platform_return_id, order_id, kind, status,
               status_rank, currency, paid_total, customer, requested_by, tracking_no, requested_at,
               correlation_id, link_digest)
           SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
               $7::text[], $8::int[], $9::text[], $10::bigint[], $11::jsonb[], $12::jsonb[], $13::text[],
               $14::timestamptz[], $15::text[], $16::bytea[])
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
        [(link_digests or {}).get(rid) for rid, _ in new],
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


def _lines_insert(first: int) -> str:
    return f"""INSERT INTO return_lines (return_id, line_no, sku, qty, unit_price, reason, note)
        SELECT * FROM {_unnest(first, "uuid[]", "int[]", "text[]", "int[]", "bigint[]", "text[]", "text[]")}"""


def _lines_columns(new: Sequence[tuple[UUID, Intake]]) -> list[list[Any]]:
    lines = [(rid, n, line) for rid, it in new for n, line in enumerate(it.body.lines, 1)]
    return [
        [x[0] for x in lines],
        [x[1] for x in lines],
        [x[2].sku for x in lines],
        [x[2].qty for x in lines],
        [x[2].unit_price for x in lines],
        [x[2].reason for x in lines],
        [x[2].note for x in lines],
    ]


def _deliveries_insert(first: int) -> str:
    return f"""INSERT INTO deliveries (source, delivery_id, return_id)
        SELECT * FROM {_unnest(first, "text[]", "text[]", "uuid[]")} ON CONFLICT DO NOTHING"""


def _deliveries_columns(deliveries: Sequence[tuple[str, str, UUID]]) -> list[list[Any]]:
    return [[d[0] for d in deliveries], [d[1] for d in deliveries], [d[2] for d in deliveries]]


async def record_deliveries(conn: Conn, deliveries: Sequence[tuple[str, str, UUID]]) -> None:
    """Remember (source, delivery id) -> return id, so a webhook delivered again is a duplicate."""
    if not deliveries:
        return
    await conn.execute(_deliveries_insert(1), *_deliveries_columns(deliveries))


async def record_accepted(
    conn: Conn,
    new: Sequence[tuple[UUID, Intake]],
    entries: Sequence[TimelineEntry],
    deliveries: Sequence[tuple[str, str, UUID]],
) -> None:
    """The new returns' lines and timeline entries, and the deliveries answered: one statement, one round trip
    (the intake's webhook waits for each of its transaction's round trips to a busy database)."""
    await conn.execute(
        f"""WITH lines AS ({_lines_insert(1)}), entries AS ({_timeline_insert(8)})
            {_deliveries_insert(14)}""",
        *_lines_columns(new),
        *_timeline_columns(entries),
        *_deliveries_columns(deliveries),
    )


async def find_delivery(conn: Conn, source: str, delivery_id: str) -> UUID | None:
    rid: UUID | None = await conn.fetchval(
        "SELECT return_id FROM deliveries WHERE source = $1 AND delivery_id = $2", source, delivery_id
    )
    return rid


def _timeline_insert(first: int) -> str:
    return f"""INSERT INTO timeline (return_id, event_id, occurred_at, type, summary, data)
        SELECT * FROM {_unnest(first, "uuid[]", "text[]", "timestamptz[]", "text[]", "text[]", "jsonb[]")}
        ON CONFLICT (return_id, event_id) DO NOTHING"""


def _timeline_columns(entries: Sequence[TimelineEntry]) -> list[list[Any]]:
    return [
        [e.return_id for e in entries],
        [e.event_id for e in entries],
        [e.occurred_at for e in entries],
        [e.type for e in entries],
        [e.summary for e in entries],
        [e.data for e in entries],
    ]


async def add_timeline(conn: Conn, entries: Sequence[TimelineEntry]) -> None:
    """Add entries; one already on its return's timeline (same event id) is skipped."""
    if not entries:
        return
    await conn.execute(_timeline_insert(1), *_timeline_columns(entries))


async def kinds_of(conn: Conn, return_ids: set[UUID]) -> dict[UUID, str]:
    """Each known return's kind (the status machine reads events with it)."""
    rows = await conn.fetch("SELECT id, kind FROM returns WHERE id = ANY($1::uuid[])", list(return_ids))
    return {r["id"]: r["kind"] for r in rows}


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


# -- the customer's page --------------------------------------------------------------------------------


async def set_link_digests(conn: Conn, digests: dict[UUID, bytes]) -> None:
    if not digests:
        return
    await conn.execute(
        """UPDATE returns r SET link_digest = d.digest FROM unnest($1::uuid[], $2::bytea[]) AS d(id, digest)
           WHERE r.id = d.id AND r.link_digest IS NULL""",
        list(digests),
        list(digests.values()),
    )


async def returns_without_link(conn: Conn, limit: int) -> list[UUID]:
    rows = await conn.fetch("SELECT id FROM returns WHERE link_digest IS NULL LIMIT $1", limit)
    return [r["id"] for r in rows]


@dataclass(frozen=True)
class CustomerReturn:
    """What the customer's page may show of a return, and what deciding about its link needs. No phone
    number, address or internal id leaves this row for the page: the template gets only these fields."""

    id: UUID
    shop_id: str
    platform_return_id: str
    order_id: str
    kind: str
    status: str
    currency: str
    paid_total: int
    locale: str | None
    timezone: str | None
    tracking_no: str | None
    link_revoked_at: datetime | None
    lines: list[dict[str, Any]]
    facts: list[Fact]


# the timeline entries the page reads (progress, refund): not SMS, attestations or discrepancies
PAGE_EVENT_TYPES = [
    "return.requested",
    "return.cancelled",
    "return.tracking_registered",
    "parcel.scanned",
    "return.received",
    "inventory.verified",
    "refund.decided",
    "refund.escalated",
    "refund.issued",
    # an exchange's news: without them its page never showed the replacement shipped, delivered or delayed
    "exchange.replacement_shipped",
    "exchange.replacement_delivered",
    "exchange.out_of_stock",
]


async def customer_return(conn: Conn, link_digest: bytes, lock: bool = False) -> CustomerReturn | None:
    """The return a customer link names (locked until the transaction ends, when asked), its lines
    and the timeline entries its page reads, in one statement: one round trip per page. (Three took a
    pooled connection three times as long; under the surge the page waited on the database, not on
    Python: p99 55 s with the returns process at 0.15 of a core, bench/page.py.)"""
    row = await conn.fetchrow(
        """SELECT r.id, r.shop_id, r.platform_return_id, r.order_id, r.kind, r.status, r.currency, r.paid_total,
               r.customer->>'locale' AS locale, r.customer->>'timezone' AS timezone, r.tracking_no,
               r.link_revoked_at,
               ARRAY(SELECT ROW(l.sku, l.qty, l.unit_price) FROM return_lines l WHERE l.return_id = r.id
                     ORDER BY l.line_no) AS lines,
               ARRAY(SELECT ROW(t.type, t.occurred_at, t.data::text) FROM timeline t
                     WHERE t.return_id = r.id AND t.type = ANY($2::text[]) ORDER BY t.occurred_at, t.id) AS facts
           FROM returns r WHERE r.link_digest = $1"""
        + (" FOR UPDATE OF r" if lock else ""),
        link_digest,
        PAGE_EVENT_TYPES,
    )
    if row is None:
        return None
    fields = {k: v for k, v in row.items() if k not in ("lines", "facts")}
    return CustomerReturn(
        **fields,
        lines=[{"sku": sku, "qty": qty, "unit_price": price} for sku, qty, price in row["lines"]],
        facts=[Fact(kind, at, orjson.loads(data)) for kind, at, data in row["facts"]],
    )


async def lock_link_revocation(conn: Conn, return_id: UUID) -> tuple[datetime | None, str | None] | None:
    """(revoked at, by whom) of a return's customer link, the return locked; None when no such return."""
    row = await conn.fetchrow(
        "SELECT link_revoked_at, link_revoked_by FROM returns WHERE id = $1 FOR UPDATE", return_id
    )
    return None if row is None else (row["link_revoked_at"], row["link_revoked_by"])


async def revoke_link(conn: Conn, return_id: UUID, by: str) -> datetime:
    """Revoke a return's customer link now, by this person; when it was revoked."""
    at: datetime = await conn.fetchval(
        """UPDATE returns SET link_revoked_at = now(), link_revoked_by = $2, updated_at = now() WHERE id = $1
           RETURNING link_revoked_at""",
        return_id,
        by,
    )
    return at


async def page_attempts_since(conn: Conn, return_id: UUID, since: datetime) -> list[datetime]:
    rows = await conn.fetch("SELECT at FROM page_attempts WHERE return_id = $1 AND at > $2", return_id, since)
    return [r["at"] for r in rows]


async def record_page_attempt(conn: Conn, return_id: UUID, at: datetime) -> None:
    await conn.execute("INSERT INTO page_attempts (return_id, at) VALUES ($1, $2)", return_id, at)
