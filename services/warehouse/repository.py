"""SQL writes (and the reads they need) of the warehouse service. Every function runs inside the
caller's transaction, handles a whole batch in one statement, and decides nothing."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from uuid import UUID

import asyncpg
import orjson

from contracts.events import RefundDecided, ReplacementReleased, ReturnCancelled, ReturnRequested, TrackingRegistered
from returnflow.db import Conn
from services.warehouse.rules import (
    CarrierScan,
    DueSubscription,
    ExpectedLine,
    KnownReceipts,
    Parcel,
    Receipt,
    Replacement,
    ShipmentFacts,
)


async def lock_tracking(conn: Conn, tracking_numbers: Collection[str]) -> None:
    """Serialise everyone matching scans to parcels on these tracking numbers (a scan parked while
    its tracking number is being registered would otherwise be missed by both). Sorted: no deadlock."""
    if tracking_numbers:
        await conn.execute(
            """SELECT pg_advisory_xact_lock(h) FROM (
                   SELECT DISTINCT hashtext('warehouse-tracking:' || t) AS h FROM unnest($1::text[]) t ORDER BY h
               ) s""",
            list(set(tracking_numbers)),
        )


async def tracking_holders(conn: Conn, tracking_numbers: Collection[str], lock: bool = False) -> dict[str, UUID]:
    """tracking number -> the return whose parcel holds it (rows locked, in return id order, if asked)."""
    if not tracking_numbers:
        return {}
    rows = await conn.fetch(
        "SELECT tracking_no, return_id FROM parcels WHERE tracking_no = ANY($1::text[])"
        + (" ORDER BY return_id FOR UPDATE" if lock else ""),
        list(set(tracking_numbers)),
    )
    return {r["tracking_no"]: r["return_id"] for r in rows}


# -- parcels from the lifecycle events ------------------------------------------------------------------


async def record_requested(conn: Conn, requested: Sequence[tuple[ReturnRequested, str | None]]) -> None:
    """A parcel per requested return (with the tracking number granted to it), and its lines."""
    if not requested:
        return
    await conn.execute(
        """INSERT INTO parcels (return_id, requested, kind, shop_id, currency, tracking_no, correlation_id)
           SELECT r, true, k, s, c, t, cid FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[],
               $5::text[], $6::text[]) AS u(r, k, s, c, t, cid)
           ON CONFLICT (return_id) DO UPDATE SET requested = true, kind = EXCLUDED.kind,
               shop_id = EXCLUDED.shop_id, currency = EXCLUDED.currency,
               tracking_no = COALESCE(parcels.tracking_no, EXCLUDED.tracking_no),
               correlation_id = EXCLUDED.correlation_id, updated_at = now()""",
        [e.return_id for e, _ in requested],
        [e.kind.value for e, _ in requested],
        [e.shop_id for e, _ in requested],
        [e.currency for e, _ in requested],
        [t for _, t in requested],
        [e.correlation_id for e, _ in requested],
    )
    lines = [(e.return_id, n, line) for e, _ in requested for n, line in enumerate(e.lines, 1)]
    await conn.execute(
        """INSERT INTO parcel_lines (return_id, line_no, sku, qty, unit_price, replacement_sku)
           SELECT * FROM unnest($1::uuid[], $2::int[], $3::text[], $4::int[], $5::bigint[], $6::text[])
           ON CONFLICT DO NOTHING""",
        [x[0] for x in lines],
        [x[1] for x in lines],
        [x[2].sku for x in lines],
        [x[2].qty for x in lines],
        [x[2].unit_price for x in lines],
        [x[2].replacement_sku for x in lines],
    )


async def record_tracking(conn: Conn, tracked: Sequence[tuple[TrackingRegistered, str]]) -> None:
    if not tracked:
        return
    await conn.execute(
        """INSERT INTO parcels (return_id, tracking_no, carrier, correlation_id)
           SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[])
           ON CONFLICT (return_id) DO UPDATE SET tracking_no = EXCLUDED.tracking_no,
               carrier = COALESCE(EXCLUDED.carrier, parcels.carrier), updated_at = now()""",
        [e.return_id for e, _ in tracked],
        [t for _, t in tracked],
        [e.carrier for e, _ in tracked],
        [e.correlation_id for e, _ in tracked],
    )


async def record_cancelled(conn: Conn, cancelled: Sequence[ReturnCancelled]) -> None:
    if not cancelled:
        return
    await conn.execute(
        """INSERT INTO parcels (return_id, cancelled_at, correlation_id)
           SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::text[])
           ON CONFLICT (return_id) DO UPDATE SET cancelled_at = EXCLUDED.cancelled_at, updated_at = now()""",
        [e.return_id for e in cancelled],
        [e.occurred_at for e in cancelled],
        [e.correlation_id for e in cancelled],
    )


async def record_released(conn: Conn, released: Sequence[ReplacementReleased]) -> None:
    """Exchanges whose replacement may ship before their goods arrive (a row may come before the request);
    the first release stays."""
    if not released:
        return
    await conn.execute(
        """INSERT INTO parcels (return_id, replacement_released_at, correlation_id)
           SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::text[])
           ON CONFLICT (return_id) DO UPDATE
           SET replacement_released_at = COALESCE(parcels.replacement_released_at, EXCLUDED.replacement_released_at),
               updated_at = now()""",
        [e.return_id for e in released],
        [e.occurred_at for e in released],
        [e.correlation_id for e in released],
    )


async def record_converted(conn: Conn, converted: Sequence[RefundDecided]) -> None:
    """Exchanges a person converted to a refund (a row may come before its return's request)."""
    if not converted:
        return
    await conn.execute(
        """INSERT INTO parcels (return_id, converted_at, correlation_id)
           SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::text[])
           ON CONFLICT (return_id) DO UPDATE SET converted_at = COALESCE(parcels.converted_at, EXCLUDED.converted_at),
               updated_at = now()""",
        [e.return_id for e in converted],
        [e.occurred_at for e in converted],
        [e.correlation_id for e in converted],
    )


# -- scans ----------------------------------------------------------------------------------------------


async def insert_scans(conn: Conn, scans: Sequence[CarrierScan]) -> set[str]:
    """Record these scans (parked); the ids of those not recorded before."""
    rows = await conn.fetch(
        """INSERT INTO scans (scan_id, carrier, tracking_no, scan_code, scanned_at, location, correlation_id)
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::text[],
               $7::text[])
           ON CONFLICT (scan_id) DO NOTHING RETURNING scan_id""",
        [s.scan_id for s in scans],
        [s.carrier for s in scans],
        [s.tracking_no for s in scans],
        [s.scan_code for s in scans],
        [s.scanned_at for s in scans],
        [s.location for s in scans],
        [s.correlation_id for s in scans],
    )
    return {r["scan_id"] for r in rows}


async def parked_scans_for(conn: Conn, tracking_numbers: Collection[str]) -> list[CarrierScan]:
    """The scans parked on these tracking numbers, locked."""
    rows = await conn.fetch(
        """SELECT scan_id, carrier, tracking_no, scan_code, scanned_at, location, correlation_id FROM scans
           WHERE return_id IS NULL AND tracking_no = ANY($1::text[]) ORDER BY scan_id FOR UPDATE""",
        list(tracking_numbers),
    )
    return [CarrierScan(**dict(r)) for r in rows]


async def returns_already_moving(conn: Conn, return_ids: Collection[UUID]) -> set[UUID]:
    """The parcels among these whose first moving scan was published already."""
    rows = await conn.fetch(
        "SELECT return_id FROM parcels WHERE return_id = ANY($1::uuid[]) AND first_moving_scan_id IS NOT NULL",
        list(return_ids),
    )
    return {r["return_id"] for r in rows}


async def mark_matched(conn: Conn, matched: Sequence[tuple[str, UUID]], firsts: dict[UUID, str]) -> None:
    """Attach scans to their returns; `firsts` (return -> scan id) are the first moving scans."""
    await conn.execute(
        """UPDATE scans s SET return_id = m.return_id, matched_at = now(), first_moving = m.first
           FROM unnest($1::text[], $2::uuid[], $3::bool[]) AS m(scan_id, return_id, first)
           WHERE s.scan_id = m.scan_id""",
        [scan_id for scan_id, _ in matched],
        [rid for _, rid in matched],
        [firsts.get(rid) == scan_id for scan_id, rid in matched],
    )
    if firsts:
        await conn.execute(
            """UPDATE parcels p SET first_moving_scan_id = f.scan_id, updated_at = now()
               FROM unnest($1::uuid[], $2::text[]) AS f(return_id, scan_id)
               WHERE p.return_id = f.return_id AND p.first_moving_scan_id IS NULL""",
            list(firsts),
            list(firsts.values()),
        )


async def recorded_scan_ids(conn: Conn, scan_ids: Collection[str]) -> set[str]:
    """Which of these scans were recorded before."""
    rows = await conn.fetch("SELECT scan_id FROM scans WHERE scan_id = ANY($1::text[])", list(scan_ids))
    return {r["scan_id"] for r in rows}


async def scan_returns(conn: Conn, scan_ids: Sequence[str]) -> dict[str, UUID | None]:
    """scan id -> the return it is matched to (None while parked)."""
    rows = await conn.fetch("SELECT scan_id, return_id FROM scans WHERE scan_id = ANY($1::text[])", list(scan_ids))
    return {r["scan_id"]: r["return_id"] for r in rows}


# -- receipts -------------------------------------------------------------------------------------------


async def lock_parcels(conn: Conn, return_ids: Sequence[UUID]) -> dict[UUID, Parcel]:
    rows = await conn.fetch(
        """SELECT return_id, requested, kind, cancelled_at FROM parcels WHERE return_id = ANY($1::uuid[])
           ORDER BY return_id FOR UPDATE""",
        list(return_ids),
    )
    return {r["return_id"]: Parcel(r["requested"], r["kind"]) for r in rows}


async def expected_lines(conn: Conn, return_ids: Sequence[UUID]) -> dict[UUID, list[ExpectedLine]]:
    expected: dict[UUID, list[ExpectedLine]] = {}
    for r in await conn.fetch(
        """SELECT return_id, sku, qty, unit_price, replacement_sku FROM parcel_lines
           WHERE return_id = ANY($1::uuid[]) ORDER BY return_id, line_no""",
        list(return_ids),
    ):
        line = ExpectedLine(r["sku"], r["qty"], r["unit_price"], r["replacement_sku"])
        expected.setdefault(r["return_id"], []).append(line)
    return expected


async def known_receipts(conn: Conn, return_ids: Sequence[UUID], receipt_ids: Sequence[str]) -> KnownReceipts:
    """The receipts of these returns, and those with these receipt ids."""
    known = KnownReceipts()
    for r in await conn.fetch(
        """SELECT receipt_id, return_id, fingerprint FROM receipts
           WHERE return_id = ANY($1::uuid[]) OR receipt_id = ANY($2::text[])""",
        list(return_ids),
        list(receipt_ids),
    ):
        known.add(r["receipt_id"], r["return_id"], r["fingerprint"])
    return known


async def insert_receipts(conn: Conn, receipts: Sequence[Receipt]) -> None:
    if not receipts:
        return
    await conn.execute(
        """INSERT INTO receipts (receipt_id, return_id, warehouse_id, device_id, inspector_id, received_at,
               fingerprint, lines)
           SELECT r, rid, w, d, i, at, f, l::jsonb FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[],
               $5::text[], $6::timestamptz[], $7::text[], $8::text[]) AS u(r, rid, w, d, i, at, f, l)""",
        [r.receipt_id for r in receipts],
        [r.return_id for r in receipts],
        [r.warehouse_id for r in receipts],
        [r.device_id for r in receipts],
        [r.inspector_id for r in receipts],
        [r.received_at for r in receipts],
        [r.fingerprint for r in receipts],
        [orjson.dumps([dataclasses.asdict(x) for x in r.lines]).decode() for r in receipts],
    )


# -- Kuaidi100 subscriptions ------------------------------------------------------------------------------


async def request_subscriptions(conn: Conn, wanted: Sequence[tuple[str, str | None, str]]) -> None:
    """A pending subscription per (tracking number, carrier, correlation id) not requested before (a
    carrier named later fills in one not known yet)."""
    rows: dict[str, tuple[str, str | None, str]] = {}
    for t, carrier, cid in wanted:
        rows[t] = (t, carrier or (rows[t][1] if t in rows else None), cid)
    if rows:
        await conn.execute(
            """INSERT INTO kuaidi100_subscriptions AS s (tracking_no, carrier, correlation_id)
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) ORDER BY 1
               ON CONFLICT (tracking_no) DO UPDATE SET carrier = COALESCE(EXCLUDED.carrier, s.carrier)
               WHERE s.status = 'pending'""",
            [r[0] for r in rows.values()],
            [r[1] for r in rows.values()],
            [r[2] for r in rows.values()],
        )


async def claim_subscriptions(pool: asyncpg.Pool, limit: int, lease_s: float) -> list[DueSubscription]:
    """Lease up to `limit` due subscriptions; another worker skips them until the lease ends."""
    rows = await pool.fetch(
        """UPDATE kuaidi100_subscriptions s SET lease_until = now() + make_interval(secs => $2),
               attempts = s.attempts + 1
           FROM (SELECT tracking_no FROM kuaidi100_subscriptions
                 WHERE status = 'pending' AND next_attempt_at <= now() AND (lease_until IS NULL OR lease_until < now())
                 ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) d
           WHERE s.tracking_no = d.tracking_no
           RETURNING s.tracking_no, s.carrier, s.attempts, s.correlation_id""",
        limit,
        lease_s,
    )
    return [DueSubscription(**dict(r)) for r in rows]


async def record_subscriptions(conn: Conn, done: Sequence[tuple[str, str, float, str | None]]) -> None:
    """(tracking number, status, seconds until the next attempt, error) of each subscription asked."""
    await conn.execute(
        """UPDATE kuaidi100_subscriptions s SET status = u.status, lease_until = NULL, last_error = u.error,
               next_attempt_at = now() + make_interval(secs => u.wait), updated_at = now()
           FROM unnest($1::text[], $2::text[], $3::float8[], $4::text[]) AS u(tracking_no, status, wait, error)
           WHERE s.tracking_no = u.tracking_no AND s.status = 'pending'""",
        [d[0] for d in done],
        [d[1] for d in done],
        [d[2] for d in done],
        [d[3] for d in done],
    )


async def subscriptions_waiting(pool: asyncpg.Pool) -> bool:
    """Whether a subscription is due now or being asked (leased)."""
    return bool(
        await pool.fetchval(
            """SELECT EXISTS (SELECT 1 FROM kuaidi100_subscriptions WHERE status = 'pending'
                   AND (next_attempt_at <= now() OR lease_until > now()))"""
        )
    )


async def next_subscription_in(pool: asyncpg.Pool) -> float | None:
    v = await pool.fetchval(
        """SELECT EXTRACT(EPOCH FROM min(GREATEST(next_attempt_at, COALESCE(lease_until, next_attempt_at))) - now())
           FROM kuaidi100_subscriptions WHERE status = 'pending'"""
    )
    return None if v is None else max(0.0, float(v))


# -- an exchange's replacement ----------------------------------------------------------------------------


async def shipment_facts(
    conn: Conn, return_id: UUID, shipment_id: str | None, tracking_no: str
) -> ShipmentFacts | None:
    """What deciding a replacement shipment needs; the exchange's parcel row locked (None: no parcel)."""
    row = await conn.fetchrow(
        """SELECT p.requested, p.kind, p.cancelled_at IS NOT NULL AS cancelled, p.converted_at IS NOT NULL AS converted,
               EXISTS (SELECT 1 FROM receipts r WHERE r.return_id = p.return_id) AS received,
               p.replacement_released_at IS NOT NULL AS released,
               x.shipment_id, x.fingerprint,
               (SELECT return_id FROM replacements WHERE shipment_id = $2) AS shipment_id_of,
               COALESCE((SELECT return_id FROM parcels WHERE tracking_no = $3),
                        (SELECT return_id FROM replacements WHERE tracking_no = $3)) AS tracking_of
           FROM parcels p LEFT JOIN replacements x ON x.return_id = p.return_id
           WHERE p.return_id = $1 FOR UPDATE OF p""",
        return_id,
        shipment_id,
        tracking_no,
    )
    if row is None:
        return None
    shipped = (row["shipment_id"], row["fingerprint"]) if row["shipment_id"] is not None else None
    return ShipmentFacts(
        row["requested"],
        row["kind"],
        row["cancelled"],
        row["received"],
        shipped,
        row["shipment_id_of"],
        row["tracking_of"],
        row["converted"],
        row["released"],
    )


async def insert_replacement(conn: Conn, r: Replacement) -> None:
    await conn.execute(
        """INSERT INTO replacements (return_id, shipment_id, warehouse_id, device_id, packed_by, carrier, tracking_no,
               shipped_at, fingerprint, lines, correlation_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11)""",
        r.return_id,
        r.shipment_id,
        r.warehouse_id,
        r.device_id,
        r.packed_by,
        r.carrier,
        r.tracking_no,
        r.shipped_at,
        r.fingerprint,
        [{"sku": sku, "qty": qty} for sku, qty in r.lines],  # the pool's jsonb codec encodes it
        r.correlation_id,
    )


@dataclass(frozen=True)
class Outgoing:
    """An outgoing replacement parcel, as its scans need it."""

    return_id: UUID
    shipment_id: str
    carrier: str
    delivered: bool


async def outgoing_holders(conn: Conn, tracking_numbers: Collection[str]) -> dict[str, Outgoing]:
    """tracking number -> the replacement parcel that has it (rows locked, in return id order)."""
    if not tracking_numbers:
        return {}
    rows = await conn.fetch(
        """SELECT tracking_no, return_id, shipment_id, carrier, delivered_at IS NOT NULL AS delivered
           FROM replacements WHERE tracking_no = ANY($1::text[]) ORDER BY return_id FOR UPDATE""",
        list(set(tracking_numbers)),
    )
    return {r["tracking_no"]: Outgoing(r["return_id"], r["shipment_id"], r["carrier"], r["delivered"]) for r in rows}


async def mark_outgoing(conn: Conn, matched: Sequence[tuple[str, UUID]], delivered: dict[UUID, CarrierScan]) -> None:
    """Attach outgoing-parcel scans to their exchanges; `delivered` (return -> scan) marks the delivery."""
    await conn.execute(
        """UPDATE scans s SET return_id = m.return_id, matched_at = now(), outgoing = true
           FROM unnest($1::text[], $2::uuid[]) AS m(scan_id, return_id) WHERE s.scan_id = m.scan_id""",
        [scan_id for scan_id, _ in matched],
        [rid for _, rid in matched],
    )
    if delivered:
        await conn.execute(
            """UPDATE replacements x SET delivered_at = d.at, delivered_scan_id = d.scan_id
               FROM unnest($1::uuid[], $2::text[], $3::timestamptz[]) AS d(return_id, scan_id, at)
               WHERE x.return_id = d.return_id AND x.delivered_at IS NULL""",
            list(delivered),
            [s.scan_id for s in delivered.values()],
            [s.scanned_at for s in delivered.values()],
        )


async def out_of_stock_reported(conn: Conn, return_id: UUID) -> bool:
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM out_of_stock WHERE return_id = $1)", return_id))


async def insert_out_of_stock(
    conn: Conn, return_id: UUID, skus: Sequence[str], warehouse_id: str, reported_by: str, note: str | None
) -> None:
    await conn.execute(
        """INSERT INTO out_of_stock (return_id, skus, warehouse_id, reported_by, note) VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (return_id) DO NOTHING""",
        return_id,
        list(skus),
        warehouse_id,
        reported_by,
        note,
    )
