"""Read side of the returns service: what GET /v1/returns/{id} and its timeline show."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from returnflow.logging import mask_phone
from returnflow.paging import page
from services.returns.rules import ReturnSearch


async def return_view(pool: asyncpg.Pool, return_id: UUID) -> dict[str, Any] | None:
    """A return with its lines; the customer's phone masked, as in every log line."""
    row = await pool.fetchrow("SELECT * FROM returns WHERE id = $1", return_id)
    if row is None:
        return None
    lines = await pool.fetch(
        "SELECT line_no, sku, qty, unit_price, reason, note FROM return_lines WHERE return_id = $1 ORDER BY line_no",
        return_id,
    )
    out = dict(row)
    out.pop("status_rank", None)
    phone = out["customer"].get("phone")
    out["customer"] = {**out["customer"], "phone": mask_phone(phone) if phone else None}  # None: no phone
    out["lines"] = [dict(r) for r in lines]
    return out


async def timeline_view(pool: asyncpg.Pool, return_id: UUID) -> dict[str, Any] | None:
    """A return's status and what happened to it, in order. One statement, so one snapshot: read apart, a
    batch of the timeline consumer committed in between showed its entries beside the status from before it."""
    rows = await pool.fetch(
        """SELECT r.status, t.occurred_at, t.type, t.summary
           FROM returns r LEFT JOIN timeline t ON t.return_id = r.id
           WHERE r.id = $1 ORDER BY t.occurred_at, t.id""",
        return_id,
    )
    if not rows:
        return None
    entries = [
        {"occurred_at": r["occurred_at"], "type": r["type"], "summary": r["summary"]}
        for r in rows
        if r["type"] is not None  # the return's row alone: nothing on its timeline yet
    ]
    return {"return_id": str(return_id), "status": rows[0]["status"], "entries": entries}


SEARCH_COLUMNS = {"order_id": "order_id", "phone": "customer ->> 'phone'", "tracking_number": "tracking_no"}


async def search_returns(
    pool: asyncpg.Pool, q: ReturnSearch, after: tuple[datetime, str] | None, limit: int
) -> dict[str, Any]:
    """Returns matching every filter given, oldest first, a page at a time (each filter has its index);
    the customer's phone masked."""
    where, args = [], []
    for name, column in (*SEARCH_COLUMNS.items(), ("status", "status")):
        value = getattr(q, name)
        if value is not None:
            args.append(value)
            where.append(f"{column} = ${len(args)}")
    filtered = " AND ".join(where)
    total = await pool.fetchval(f"SELECT count(*) FROM returns WHERE {filtered}", *args)
    if after is not None:
        args += [after[0], after[1]]
        where.append(f"(created_at, id) > (${len(args) - 1}, ${len(args)}::uuid)")
    args.append(limit + 1)
    rows = await pool.fetch(
        f"""SELECT id AS return_id, shop_id, platform, platform_return_id, order_id, kind, status, currency,
               paid_total, customer ->> 'phone' AS phone, tracking_no, requested_at, created_at
           FROM returns WHERE {" AND ".join(where)} ORDER BY created_at, id LIMIT ${len(args)}""",
        *args,
    )
    items, cursor = page(rows, limit, "created_at", "return_id")
    for item in items:
        item["phone"] = mask_phone(item["phone"] or "")
    return {"returns": items, "next_cursor": cursor, "counts": {"total": total}}
