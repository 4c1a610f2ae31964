"""Read side of the warehouse service: a return's parcel (lines, scans, receipt) and the parked scans."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from returnflow.backlogs import Backlog
from returnflow.db import Conn
from returnflow.shops import Shops


async def parcel_view(db: Conn, return_id: UUID) -> dict[str, Any] | None:
    row = await db.fetchrow("SELECT * FROM parcels WHERE return_id = $1", return_id)
    if row is None:
        return None
    lines = await db.fetch(
        "SELECT sku, qty, unit_price, replacement_sku FROM parcel_lines WHERE return_id = $1 ORDER BY line_no",
        return_id,
    )
    scans = await db.fetch(
        """SELECT scan_id, carrier, scan_code, scanned_at, location, first_moving FROM scans
           WHERE return_id = $1 AND NOT outgoing ORDER BY scanned_at, scan_id""",
        return_id,
    )
    receipt = await db.fetchrow(
        """SELECT receipt_id, warehouse_id, device_id, inspector_id, received_at, lines FROM receipts
           WHERE return_id = $1""",
        return_id,
    )
    replacement = await db.fetchrow(
        """SELECT shipment_id, carrier, tracking_no, packed_by, shipped_at, lines, delivered_at FROM replacements
           WHERE return_id = $1""",
        return_id,
    )
    return {
        **dict(row),
        "lines": [dict(r) for r in lines],
        "scans": [dict(r) for r in scans],
        "receipt": dict(receipt) if receipt else None,
        "replacement": dict(replacement) if replacement else None,
    }


async def parked_scans(pool: asyncpg.Pool, limit: int = 100) -> list[dict[str, Any]]:
    """Scans waiting for their parcel, oldest first."""
    rows = await pool.fetch(
        """SELECT scan_id, carrier, tracking_no, scan_code, scanned_at, received_at FROM scans
           WHERE return_id IS NULL ORDER BY received_at LIMIT $1""",
        limit,
    )
    return [dict(r) for r in rows]


async def backlogs(conn: Conn, shops: Shops | None = None) -> list[Backlog]:
    """What the warehouse holds waiting (gauges): carrier scans parked because no parcel has their tracking
    number yet (`GET /v1/warehouse/scans/parked` lists them), and tracking numbers not subscribed with
    Kuaidi100 yet (no pushes come for them until they are)."""
    return [
        Backlog.of(
            "scans_parked",
            await conn.fetchrow(
                "SELECT count(*), extract(epoch FROM now() - min(received_at)) FROM scans WHERE return_id IS NULL"
            ),
        ),
        Backlog.of(
            "kuaidi100_subscriptions_pending",
            await conn.fetchrow(
                """SELECT count(*), extract(epoch FROM now() - min(created_at)) FROM kuaidi100_subscriptions
                   WHERE status = 'pending'"""
            ),
        ),
    ]


async def parcel_to_receive(pool: asyncpg.Pool, tracking_no: str) -> dict[str, Any] | None:
    """What the receiving screen needs for a scanned tracking number: the return it belongs to, the lines
    expected back, and the receipt if the parcel was already received."""
    row = await pool.fetchrow(
        """SELECT return_id, tracking_no, carrier, kind, shop_id, requested, cancelled_at FROM parcels
           WHERE tracking_no = $1""",
        tracking_no,
    )
    if row is None:
        return None
    lines = await pool.fetch(
        "SELECT line_no, sku, qty, unit_price FROM parcel_lines WHERE return_id = $1 ORDER BY line_no",
        row["return_id"],
    )
    receipt = await pool.fetchrow(
        "SELECT receipt_id, received_at, inspector_id FROM receipts WHERE return_id = $1", row["return_id"]
    )
    return {**dict(row), "lines": [dict(r) for r in lines], "receipt": dict(receipt) if receipt else None}
