"""The steps of the warehouse service: parcels from the lifecycle events (and the scans parked on their
tracking numbers), carrier scans and device receipts (each a group commit). Each reads as load →
pure decision (rules) → save (+ events through the outbox)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID, uuid4

import asyncpg

from contracts.events import Message, ReturnCancelled, ReturnRequested, TrackingRegistered
from returnflow.batching import GroupCommitter
from returnflow.consumer import Batch
from returnflow.db import Conn
from returnflow.logging import get_logger
from returnflow.outbox import enqueue
from returnflow.settings import Settings
from services.warehouse import events, repository, rules
from services.warehouse.rules import (
    AcceptReceipt,
    CarrierScan,
    Receipt,
    ReceiptAccepted,
    ReceiptIntake,
    ReceiptOutcome,
    ScanIntake,
    ScanResult,
)
from services.warehouse.settings import WarehouseSettings

log = get_logger("warehouse.handlers")


@dataclass(frozen=True)
class Device:
    """A registered scanner, or a member of the warehouse staff with a personal token: who posts a
    receipt (the receipt's device_id is the person's id for staff), for which warehouse."""

    device_id: str
    warehouse_id: str
    kind: str = "device"  # device | staff


@dataclass
class WarehouseContext:
    pool: asyncpg.Pool
    settings: WarehouseSettings
    runtime_settings: Settings  # webhook secrets and body limits
    devices: dict[bytes, Device]  # sha256(token) -> device: a token is compared by digest, never logged
    scans: GroupCommitter[ScanIntake, ScanResult]
    receipts: GroupCommitter[ReceiptIntake, ReceiptOutcome]


# -- the lifecycle consumer: return requested, tracking registered, cancelled -------------------------------


async def apply_lifecycle(ctx: WarehouseContext, conn: Conn, batch: Batch) -> None:
    """A parcel is expected per requested return; tracking numbers attach to parcels (never re-pointed
    from another return); scans parked on a tracking number are published once a parcel holds it."""
    # one row per return even if delivered twice in a batch; sorted so concurrent batches lock in one order
    requested = list({e.return_id: e for e in sorted(batch.of(ReturnRequested), key=lambda e: e.return_id)}.values())
    registered = sorted(batch.of(TrackingRegistered), key=lambda e: e.occurred_at)
    latest = list({e.return_id: e for e in registered}.values())  # the latest registration wins
    wanted = [e.tracking_no for e in batch.of(ReturnRequested) if e.tracking_no] + [e.tracking_no for e in registered]
    await repository.lock_tracking(conn, wanted)
    claims = [(e.return_id, e.tracking_no) for e in requested] + [(e.return_id, e.tracking_no) for e in latest]
    granted = rules.claim_tracking_numbers(await repository.tracking_holders(conn, wanted), claims)
    log_refused_claims(claims, granted)
    await repository.record_requested(conn, list(zip(requested, granted[: len(requested)], strict=True)))
    tracked = [(e, t) for e, t in zip(latest, granted[len(requested) :], strict=True) if t is not None]
    await repository.record_tracking(conn, sorted(tracked, key=lambda x: x[0].return_id))
    await repository.record_cancelled(conn, sorted(batch.of(ReturnCancelled), key=lambda e: e.return_id))
    await unpark(conn, await repository.tracking_holders(conn, wanted, lock=True))


def log_refused_claims(claims: Sequence[tuple[UUID, str | None]], granted: Sequence[str | None]) -> None:
    for (_, tracking_no), got in zip(claims, granted, strict=True):
        if tracking_no is not None and got is None:
            log.warning("tracking number already belongs to another return; ignored", tracking_no=tracking_no)


async def unpark(conn: Conn, tracking: dict[str, UUID]) -> None:
    """Publish the scans parked on these tracking numbers (tracking number -> return id)."""
    if tracking:
        parked = await repository.parked_scans_for(conn, tracking)
        await publish_scans(conn, rules.match_scans(parked, tracking))


async def publish_scans(conn: Conn, matches: dict[UUID, list[CarrierScan]]) -> None:
    """Attach scans to their returns and publish one parcel-scanned event each, in scan order; the
    first one showing a parcel moving is marked (once per parcel). Parcel rows must be locked."""
    if not matches:
        return
    moving = await repository.returns_already_moving(conn, list(matches))
    now = datetime.now(UTC)
    published: list[Message] = []
    firsts: dict[UUID, str] = {}
    for rid, scans in matches.items():
        first = rules.first_moving(rid in moving, scans)
        if first is not None:
            firsts[rid] = first
        published += [events.parcel_scanned(rid, s, s.scan_id == first, now) for s in rules.publication_order(scans)]
    await repository.mark_matched(conn, [(s.scan_id, rid) for rid, scans in matches.items() for s in scans], firsts)
    await enqueue(conn, published)


# -- carrier scans (group commit) -----------------------------------------------------------------------


async def accept_scans(conn: Conn, items: Sequence[ScanIntake]) -> list[ScanResult]:
    """Record distinct scans; publish those whose parcel is known, park the rest."""
    await repository.lock_tracking(conn, [i.body.tracking_no for i in items])
    distinct = [i.scan() for i in rules.distinct_scans(items)]
    recorded = await repository.insert_scans(conn, distinct)
    new = [s for s in distinct if s.scan_id in recorded]
    parcels = await repository.tracking_holders(conn, {s.tracking_no for s in new}, lock=True)
    await publish_scans(conn, rules.match_scans(new, parcels))
    matched = await repository.scan_returns(conn, [i.scan_id for i in items])
    return rules.scan_results(items, recorded, matched)


# -- device receipts (group commit) ---------------------------------------------------------------------


async def accept_receipts(conn: Conn, items: Sequence[ReceiptIntake]) -> list[ReceiptOutcome]:
    """Each receipt accepted (recorded, return-received and attestations published) or refused, in
    order: a receipt accepted earlier in the batch counts as known to the later ones."""
    by_tracking = await repository.tracking_holders(conn, [i.body.tracking_no for i in items if i.body.tracking_no])
    rids = [
        i.body.return_id if i.body.return_id is not None else by_tracking.get(i.body.tracking_no or "") for i in items
    ]
    wanted = sorted({r for r in rids if r is not None})
    parcels = await repository.lock_parcels(conn, wanted)
    expected = await repository.expected_lines(conn, wanted)
    known = await repository.known_receipts(conn, wanted, [i.body.receipt_id for i in items if i.body.receipt_id])
    now = datetime.now(UTC)
    outcomes: list[ReceiptOutcome] = []
    accepted: list[Receipt] = []
    for it, rid in zip(items, rids, strict=True):
        parcel = parcels.get(rid) if rid is not None else None
        decision = rules.decide_receipt(
            rid, parcel, expected.get(rid, []) if rid else [], known, it.body, it.fingerprint
        )
        if not isinstance(decision, AcceptReceipt):
            outcomes.append(decision)
            continue
        receipt = receipt_of(it, decision, now)
        known.add(receipt.receipt_id, receipt.return_id, receipt.fingerprint)
        accepted.append(receipt)
        outcomes.append(ReceiptAccepted(receipt.receipt_id, receipt.return_id))
    await repository.insert_receipts(conn, accepted)
    await enqueue(conn, [e for r in accepted for e in events.receipt_events(r, now)])
    return outcomes


def receipt_of(it: ReceiptIntake, accept: AcceptReceipt, now: datetime) -> Receipt:
    """The receipt as recorded: the device's receipt id (or a new one), received now unless it says when."""
    b = it.body
    return Receipt(
        receipt_id=b.receipt_id or f"rcpt-{uuid4().hex}",
        return_id=accept.return_id,
        warehouse_id=it.warehouse_id,
        device_id=it.device_id,
        inspector_id=b.inspector_id,
        received_at=b.received_at or now,
        fingerprint=it.fingerprint,
        correlation_id=it.correlation_id,
        lines=accept.lines,
    )
