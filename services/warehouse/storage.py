"""SQL of the warehouse service. Every function runs inside the caller's transaction and handles a
whole batch with a fixed number of statements."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import orjson

from contracts.events import (
    InventoryAttested,
    Message,
    ParcelScanned,
    ReceivedLine,
    ReturnCancelled,
    ReturnReceived,
    ReturnRequested,
    ScanCode,
    TrackingRegistered,
)
from returnflow.db import Conn
from returnflow.logging import get_logger
from returnflow.outbox import enqueue
from services.warehouse.domain import (
    PARCEL_KINDS,
    ExpectedLine,
    PendingScan,
    ReceiptBody,
    ScanWebhook,
    first_moving,
    publication_order,
    receipt_errors,
    received_lines,
    stock_movements,
)

log = get_logger("warehouse.storage")


async def lock_tracking(conn: Conn, tracking_numbers: Sequence[str]) -> None:
    """Serialise everyone matching scans to parcels on these tracking numbers (a scan parked while
    its tracking number is being registered would otherwise be missed by both). Sorted: no deadlock."""
    if tracking_numbers:
        await conn.execute(
            """SELECT pg_advisory_xact_lock(h) FROM (
                   SELECT DISTINCT hashtext('warehouse-tracking:' || t) AS h FROM unnest($1::text[]) t ORDER BY h
               ) s""",
            list(set(tracking_numbers)),
        )


# -- matching scans to parcels ------------------------------------------------------------------------


@dataclass(frozen=True)
class ScanRow:
    scan_id: str
    carrier: str
    tracking_no: str
    scan_code: str
    scanned_at: datetime
    location: str | None
    correlation_id: str


async def publish_scans(conn: Conn, matches: dict[UUID, list[ScanRow]]) -> int:
    """Attach scans to their returns and publish one parcel-scanned event each, in scan order; the
    first one showing a parcel moving is marked (once per parcel). Parcel rows must be locked."""
    if not matches:
        return 0
    moving = {
        r["return_id"]: r["first_moving_scan_id"] is not None
        for r in await conn.fetch(
            "SELECT return_id, first_moving_scan_id FROM parcels WHERE return_id = ANY($1::uuid[])", list(matches)
        )
    }
    now = datetime.now(UTC)
    events: list[Message] = []
    firsts: dict[UUID, str] = {}
    for rid, scans in matches.items():
        by_id = {s.scan_id: s for s in scans}
        ordered = publication_order(PendingScan(s.scan_id, s.scan_code, s.scanned_at) for s in scans)
        first = first_moving(moving.get(rid, False), ordered)
        if first is not None:
            firsts[rid] = first
        for p in ordered:
            s = by_id[p.scan_id]
            events.append(
                ParcelScanned.model_construct(
                    event_id=uuid.uuid4(),
                    type="parcel.scanned",
                    version=1,
                    occurred_at=now,
                    return_id=rid,
                    correlation_id=s.correlation_id,
                    scan_id=s.scan_id,
                    tracking_no=s.tracking_no,
                    carrier=s.carrier,
                    scan_code=ScanCode(s.scan_code),
                    scanned_at=s.scanned_at,
                    location=s.location,
                    first_moving=p.scan_id == first,
                )
            )
    pairs = [(s.scan_id, rid) for rid, scans in matches.items() for s in scans]
    await conn.execute(
        """UPDATE scans s SET return_id = m.return_id, matched_at = now(), first_moving = m.first
           FROM unnest($1::text[], $2::uuid[], $3::bool[]) AS m(scan_id, return_id, first)
           WHERE s.scan_id = m.scan_id""",
        [p[0] for p in pairs],
        [p[1] for p in pairs],
        [firsts.get(p[1]) == p[0] for p in pairs],
    )
    if firsts:
        await conn.execute(
            """UPDATE parcels p SET first_moving_scan_id = f.scan_id, updated_at = now()
               FROM unnest($1::uuid[], $2::text[]) AS f(return_id, scan_id)
               WHERE p.return_id = f.return_id AND p.first_moving_scan_id IS NULL""",
            list(firsts),
            list(firsts.values()),
        )
    await enqueue(conn, events)
    return len(events)


async def unpark(conn: Conn, tracking: dict[str, UUID]) -> int:
    """Publish the scans parked on these tracking numbers (tracking_no -> return id)."""
    if not tracking:
        return 0
    rows = await conn.fetch(
        """SELECT scan_id, carrier, tracking_no, scan_code, scanned_at, location, correlation_id FROM scans
           WHERE return_id IS NULL AND tracking_no = ANY($1::text[]) ORDER BY scan_id FOR UPDATE""",
        list(tracking),
    )
    matches: dict[UUID, list[ScanRow]] = {}
    for r in rows:
        matches.setdefault(tracking[r["tracking_no"]], []).append(ScanRow(**dict(r)))
    return await publish_scans(conn, matches)


# -- consumed events: return requested, tracking registered, cancelled ----------------------------------


async def apply_lifecycle(conn: Conn, events: Sequence[Message]) -> None:
    requested = [e for e in events if isinstance(e, ReturnRequested)]
    trackings = sorted((e for e in events if isinstance(e, TrackingRegistered)), key=lambda e: e.occurred_at)
    cancelled = [e for e in events if isinstance(e, ReturnCancelled)]
    wanted = [e.tracking_no for e in requested if e.tracking_no] + [e.tracking_no for e in trackings]
    await lock_tracking(conn, wanted)
    holders = {
        r["tracking_no"]: r["return_id"]
        for r in await conn.fetch(
            "SELECT tracking_no, return_id FROM parcels WHERE tracking_no = ANY($1::text[])", list(set(wanted))
        )
    }

    def claim(tracking_no: str | None, rid: UUID) -> str | None:
        """The tracking number if no other return holds it (never silently re-pointed)."""
        if tracking_no is None:
            return None
        holder = holders.get(tracking_no)
        if holder is not None and holder != rid:
            log.warning("tracking number already belongs to another return; ignored", tracking_no=tracking_no)
            return None
        holders[tracking_no] = rid
        return tracking_no

    if requested:
        # one row per return even if delivered twice in a batch; sorted so concurrent batches lock in one order
        reqs = {e.return_id: e for e in sorted(requested, key=lambda e: e.return_id)}
        rows = [(e, claim(e.tracking_no, e.return_id)) for e in reqs.values()]
        await conn.execute(
            """INSERT INTO parcels (return_id, requested, kind, shop_id, currency, tracking_no, correlation_id)
               SELECT r, true, k, s, c, t, cid FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[],
                   $5::text[], $6::text[]) AS u(r, k, s, c, t, cid)
               ON CONFLICT (return_id) DO UPDATE SET requested = true, kind = EXCLUDED.kind,
                   shop_id = EXCLUDED.shop_id, currency = EXCLUDED.currency,
                   tracking_no = COALESCE(parcels.tracking_no, EXCLUDED.tracking_no),
                   correlation_id = EXCLUDED.correlation_id, updated_at = now()""",
            [e.return_id for e, _ in rows],
            [e.kind.value for e, _ in rows],
            [e.shop_id for e, _ in rows],
            [e.currency for e, _ in rows],
            [t for _, t in rows],
            [e.correlation_id for e, _ in rows],
        )
        lines = [(e.return_id, n, line) for e in reqs.values() for n, line in enumerate(e.lines, 1)]
        await conn.execute(
            """INSERT INTO parcel_lines (return_id, line_no, sku, qty, unit_price)
               SELECT * FROM unnest($1::uuid[], $2::int[], $3::text[], $4::int[], $5::bigint[])
               ON CONFLICT DO NOTHING""",
            [x[0] for x in lines],
            [x[1] for x in lines],
            [x[2].sku for x in lines],
            [x[2].qty for x in lines],
            [x[2].unit_price for x in lines],
        )
    latest: dict[UUID, TrackingRegistered] = {e.return_id: e for e in trackings}  # the latest registration wins
    tracked = [(e, claim(e.tracking_no, e.return_id)) for e in latest.values()]
    tracked = sorted(((e, t) for e, t in tracked if t is not None), key=lambda x: x[0].return_id)
    if tracked:
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
    if cancelled:
        cancelled.sort(key=lambda e: e.return_id)
        await conn.execute(
            """INSERT INTO parcels (return_id, cancelled_at, correlation_id)
               SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::text[])
               ON CONFLICT (return_id) DO UPDATE SET cancelled_at = EXCLUDED.cancelled_at, updated_at = now()""",
            [e.return_id for e in cancelled],
            [e.occurred_at for e in cancelled],
            [e.correlation_id for e in cancelled],
        )
    now_held = {
        r["tracking_no"]: r["return_id"]
        for r in await conn.fetch(
            """SELECT tracking_no, return_id FROM parcels WHERE tracking_no = ANY($1::text[])
               ORDER BY return_id FOR UPDATE""",
            list(set(wanted)),
        )
    }
    await unpark(conn, now_held)


# -- carrier scan webhook ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScanIntake:
    carrier: str
    scan_id: str
    body: ScanWebhook
    correlation_id: str


@dataclass(frozen=True)
class ScanResult:
    scan_id: str
    duplicate: bool
    return_id: UUID | None


async def accept_scans(conn: Conn, items: Sequence[ScanIntake]) -> list[ScanResult]:
    """Record distinct scans; publish those whose parcel is known, park the rest."""
    await lock_tracking(conn, [i.body.tracking_no for i in items])
    first: dict[str, ScanIntake] = {}
    for it in items:
        first.setdefault(it.scan_id, it)
    fresh_items = list(first.values())
    inserted = {
        r["scan_id"]
        for r in await conn.fetch(
            """INSERT INTO scans (scan_id, carrier, tracking_no, scan_code, scanned_at, location, correlation_id)
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::text[],
                   $7::text[])
               ON CONFLICT (scan_id) DO NOTHING RETURNING scan_id""",
            [i.scan_id for i in fresh_items],
            [i.carrier for i in fresh_items],
            [i.body.tracking_no for i in fresh_items],
            [i.body.scan_code.value for i in fresh_items],
            [i.body.scanned_at for i in fresh_items],
            [i.body.location for i in fresh_items],
            [i.correlation_id for i in fresh_items],
        )
    }
    new = [i for i in fresh_items if i.scan_id in inserted]
    parcels = {
        r["tracking_no"]: r["return_id"]
        for r in await conn.fetch(
            """SELECT tracking_no, return_id FROM parcels WHERE tracking_no = ANY($1::text[])
               ORDER BY return_id FOR UPDATE""",
            list({i.body.tracking_no for i in new}),
        )
    }
    matches: dict[UUID, list[ScanRow]] = {}
    for i in new:
        rid = parcels.get(i.body.tracking_no)
        if rid is not None:
            b = i.body
            row = ScanRow(
                i.scan_id, i.carrier, b.tracking_no, b.scan_code.value, b.scanned_at, b.location, i.correlation_id
            )
            matches.setdefault(rid, []).append(row)
    await publish_scans(conn, matches)
    known = {
        r["scan_id"]: r["return_id"]
        for r in await conn.fetch(
            "SELECT scan_id, return_id FROM scans WHERE scan_id = ANY($1::text[])", [i.scan_id for i in items]
        )
    }
    seen: set[str] = set()
    out = []
    for it in items:
        dup = it.scan_id not in inserted or it.scan_id in seen
        seen.add(it.scan_id)
        out.append(ScanResult(it.scan_id, dup, known.get(it.scan_id)))
    return out


# -- receipts ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceiptIntake:
    device_id: str
    warehouse_id: str
    body: ReceiptBody
    fingerprint: str
    correlation_id: str


@dataclass
class ReceiptResult:
    status: int
    body: dict[str, Any] = field(default_factory=dict)


async def accept_receipts(conn: Conn, items: Sequence[ReceiptIntake]) -> list[ReceiptResult]:
    by_tracking = {
        r["tracking_no"]: r["return_id"]
        for r in await conn.fetch(
            "SELECT tracking_no, return_id FROM parcels WHERE tracking_no = ANY($1::text[])",
            [i.body.tracking_no for i in items if i.body.tracking_no],
        )
    }
    rids: list[UUID | None] = [
        i.body.return_id if i.body.return_id is not None else by_tracking.get(i.body.tracking_no or "") for i in items
    ]
    wanted = sorted({r for r in rids if r is not None})
    parcels = {
        r["return_id"]: r
        for r in await conn.fetch(
            """SELECT return_id, requested, kind, cancelled_at FROM parcels WHERE return_id = ANY($1::uuid[])
               ORDER BY return_id FOR UPDATE""",
            wanted,
        )
    }
    expected: dict[UUID, list[ExpectedLine]] = {}
    for r in await conn.fetch(
        """SELECT return_id, sku, qty, unit_price FROM parcel_lines WHERE return_id = ANY($1::uuid[])
           ORDER BY return_id, line_no""",
        wanted,
    ):
        expected.setdefault(r["return_id"], []).append(ExpectedLine(r["sku"], r["qty"], r["unit_price"]))
    existing_by_return: dict[UUID, tuple[str, str]] = {}
    existing_ids: dict[str, UUID] = {}
    for r in await conn.fetch(
        """SELECT receipt_id, return_id, fingerprint FROM receipts
           WHERE return_id = ANY($1::uuid[]) OR receipt_id = ANY($2::text[])""",
        wanted,
        [i.body.receipt_id for i in items if i.body.receipt_id],
    ):
        existing_by_return[r["return_id"]] = (r["receipt_id"], r["fingerprint"])
        existing_ids[r["receipt_id"]] = r["return_id"]

    now = datetime.now(UTC)
    results: list[ReceiptResult] = []
    rows: list[tuple[Any, ...]] = []
    events: list[Message] = []
    for it, rid in zip(items, rids, strict=True):
        b = it.body
        ref = f"return {b.return_id}" if b.return_id else f"tracking number {b.tracking_no!r}"
        parcel = parcels.get(rid) if rid else None
        if parcel is None or not parcel["requested"]:
            results.append(ReceiptResult(404, {"error": f"no parcel is expected for {ref} (unknown return?)"}))
            continue
        assert rid is not None
        if parcel["kind"] not in PARCEL_KINDS:
            results.append(
                ReceiptResult(409, {"error": f"return {rid} is {parcel['kind']}: no goods are expected back"})
            )
            continue
        if rid in existing_by_return:
            rec_id, fp = existing_by_return[rid]
            if b.receipt_id == rec_id and fp == it.fingerprint:
                results.append(ReceiptResult(200, {"receipt_id": rec_id, "return_id": str(rid), "duplicate": True}))
            else:
                results.append(
                    ReceiptResult(
                        409,
                        {
                            "error": f"return {rid} already has receipt {rec_id}; a second receipt is not accepted",
                            "receipt_id": rec_id,
                        },
                    )
                )
            continue
        if b.receipt_id and b.receipt_id in existing_ids:
            results.append(
                ReceiptResult(409, {"error": f"receipt id {b.receipt_id!r} was already used for another return"})
            )
            continue
        exp = expected.get(rid, [])
        errors = receipt_errors(exp, b)
        if errors:
            results.append(ReceiptResult(422, {"error": "receipt does not fit the return", "fields": errors}))
            continue
        receipt_id = b.receipt_id or f"rcpt-{uuid.uuid4().hex}"
        received_at = b.received_at or now
        lines = received_lines(exp, b)
        event_lines = [
            ReceivedLine(
                sku=x.sku,
                qty_requested=x.qty_requested,
                qty_received=x.qty_received,
                unit_price=x.unit_price,
                condition=x.condition,
                disposition=x.disposition,
            )
            for x in lines
        ]
        events.append(
            ReturnReceived(
                occurred_at=now,
                return_id=rid,
                correlation_id=it.correlation_id,
                receipt_id=receipt_id,
                warehouse_id=it.warehouse_id,
                inspector_id=b.inspector_id,
                received_at=received_at,
                lines=event_lines,
            )
        )
        for n, (sku, movement, qty) in enumerate(stock_movements(lines), 1):
            events.append(
                InventoryAttested(
                    occurred_at=now,
                    return_id=rid,
                    correlation_id=it.correlation_id,
                    attestation_id=f"{receipt_id}:{n}",
                    source="warehouse",
                    sku=sku,
                    movement=movement,
                    quantity=qty,
                    attested_by=b.inspector_id,
                    attested_at=received_at,
                )
            )
        rows.append(
            (
                receipt_id,
                rid,
                it.warehouse_id,
                it.device_id,
                b.inspector_id,
                received_at,
                it.fingerprint,
                orjson.dumps([x.model_dump(mode="json") for x in event_lines]).decode(),
            )
        )
        existing_by_return[rid] = (receipt_id, it.fingerprint)
        existing_ids[receipt_id] = rid
        results.append(ReceiptResult(201, {"receipt_id": receipt_id, "return_id": str(rid), "duplicate": False}))
    if rows:
        await conn.execute(
            """INSERT INTO receipts (receipt_id, return_id, warehouse_id, device_id, inspector_id, received_at,
                   fingerprint, lines)
               SELECT r, rid, w, d, i, at, f, l::jsonb FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[],
                   $5::text[], $6::timestamptz[], $7::text[], $8::text[]) AS u(r, rid, w, d, i, at, f, l)""",
            *[list(col) for col in zip(*rows, strict=True)],
        )
        await enqueue(conn, events)
    return results


async def get_parcel(conn: Conn | Any, return_id: UUID) -> dict[str, Any] | None:
    row = await conn.fetchrow("SELECT * FROM parcels WHERE return_id = $1", return_id)
    if row is None:
        return None
    out = dict(row)
    out["lines"] = [
        dict(r)
        for r in await conn.fetch(
            "SELECT sku, qty, unit_price FROM parcel_lines WHERE return_id = $1 ORDER BY line_no", return_id
        )
    ]
    out["scans"] = [
        dict(r)
        for r in await conn.fetch(
            """SELECT scan_id, carrier, scan_code, scanned_at, location, first_moving FROM scans
               WHERE return_id = $1 ORDER BY scanned_at, scan_id""",
            return_id,
        )
    ]
    receipt = await conn.fetchrow(
        """SELECT receipt_id, warehouse_id, device_id, inspector_id, received_at, lines FROM receipts
           WHERE return_id = $1""",
        return_id,
    )
    out["receipt"] = dict(receipt) if receipt else None
    return out


async def parked_scans(conn: Conn | Any, limit: int = 100) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """SELECT scan_id, carrier, tracking_no, scan_code, scanned_at, received_at FROM scans
           WHERE return_id IS NULL ORDER BY received_at LIMIT $1""",
        limit,
    )
    return [dict(r) for r in rows]
