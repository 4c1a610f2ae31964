"""Read side of the returns service: what GET /v1/returns/{id} and its timeline show."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from returnflow.logging import mask_phone


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
    out["customer"] = {**out["customer"], "phone": mask_phone(out["customer"].get("phone", ""))}
    out["lines"] = [dict(r) for r in lines]
    return out


async def timeline_view(pool: asyncpg.Pool, return_id: UUID) -> dict[str, Any] | None:
    """A return's status and what happened to it, in order."""
    status = await pool.fetchval("SELECT status FROM returns WHERE id = $1", return_id)
    if status is None:
        return None
    rows = await pool.fetch(
        "SELECT occurred_at, type, summary FROM timeline WHERE return_id = $1 ORDER BY occurred_at, id",
        return_id,
    )
    return {"return_id": str(return_id), "status": status, "entries": [dict(r) for r in rows]}
