"""The steps of the warehouse service: parcels from the lifecycle events (and the scans parked on their
tracking numbers), carrier scans and device receipts (each a group commit). Each reads as load →
pure decision (rules) → save (+ events through the outbox)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from uuid import UUID, uuid4

import asyncpg
import httpx

from contracts.events import (
    Message,
    RefundBasis,
    RefundDecided,
    ReplacementReleased,
    ReturnCancelled,
    ReturnRequested,
    TrackingRegistered,
)
from returnflow.batching import GroupCommitter
from returnflow.consumer import Batch
from returnflow.db import Conn
from returnflow.logging import get_logger
from returnflow.loops import Worker
from returnflow.outbox import enqueue
from returnflow.settings import Settings
from services.warehouse import events, repository, rules
from services.warehouse.rules import (
    AcceptReceipt,
    CarrierScan,
    DueSubscription,
    FeedScans,
    OutOfStockAccepted,
    OutOfStockOutcome,
    Receipt,
    ReceiptAccepted,
    ReceiptIntake,
    ReceiptOutcome,
    Replacement,
    ScanIntake,
    ScanResult,
    ShipmentAccepted,
    ShipmentOutcome,
    ShipReplacement,
    Subscribed,
    SubscribeLater,
    SubscriptionOutcome,
    SubscriptionRefused,
)
from services.warehouse.schemas import Kuaidi100Push, OutOfStockBody, ReplacementBody
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
    kuaidi100: httpx.AsyncClient | None = None  # subscribing tracking numbers, when configured


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
    if ctx.settings.kuaidi100_subscribes:
        firsts = zip(requested, granted[: len(requested)], strict=True)
        subscribe = [(t, None, e.correlation_id) for e, t in firsts if t is not None]
        await repository.request_subscriptions(conn, subscribe + [(t, e.carrier, e.correlation_id) for e, t in tracked])
    converted = [
        e for e in batch.of(RefundDecided) if e.decision == "refund" and e.basis == RefundBasis.exchange_conversion
    ]
    await repository.record_converted(conn, sorted(converted, key=lambda e: e.return_id))
    released: dict[UUID, ReplacementReleased] = {}  # one row per return (the first release), locked in id order
    for e in sorted(batch.of(ReplacementReleased), key=lambda e: e.occurred_at):
        released.setdefault(e.return_id, e)
    await repository.record_released(conn, [released[rid] for rid in sorted(released)])
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
    await match_outgoing(conn, [s for s in new if s.tracking_no not in parcels])
    matched = await repository.scan_returns(conn, [i.scan_id for i in items])
    return rules.scan_results(items, recorded, matched)


# -- courier tracking feeds -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FeedOutcome:
    """What became of a push's checkpoints: new scans (matched or parked), and those seen before."""

    recorded: list[ScanResult]
    duplicates: int


async def accept_feed(ctx: WarehouseContext, provider: str, feed: FeedScans, correlation_id: str) -> FeedOutcome:
    """Each checkpoint not recorded before goes through the carriers' scan intake (recorded, then published
    or parked exactly like a native scan); a push repeating the parcel's history records nothing twice."""
    for where in feed.unmapped:
        log.info("courier checkpoint is not a scan; skipped", provider=provider, checkpoint=where)
    async with ctx.pool.acquire() as conn:
        recorded = await repository.recorded_scan_ids(conn, [s.scan_id for s in feed.scans])
    new = rules.new_checkpoints(feed.scans, recorded)
    intakes = [ScanIntake(s.carrier, s.scan_id, s.body, correlation_id) for s in new]
    results = await asyncio.gather(*(ctx.scans.submit(i) for i in intakes))
    fresh = [r for r in results if not r.duplicate]  # another delivery of the same push may have won the race
    return FeedOutcome(fresh, len(feed.scans) - len(fresh))


async def accept_kuaidi100(ctx: WarehouseContext, push: Kuaidi100Push, correlation_id: str) -> FeedOutcome:
    """A Kuaidi100 push's checkpoints as scans; a push saying Kuaidi100 stopped watching the number
    (`abort`: nothing found for days, or a wrong courier code) is logged for a person to look at."""
    if push.status == "abort":
        log.warning(
            "kuaidi100 stopped tracking a number", tracking_no=push.lastResult.nu, kuaidi100_message=push.message
        )
    return await accept_feed(ctx, "kuaidi100", rules.kuaidi100_scans(push), correlation_id)


# -- Kuaidi100 subscriptions (a worker) ---------------------------------------------------------------------

SUBSCRIBE_BATCH = 20
SUBSCRIBE_LEASE_S = 60.0


async def kuaidi100_subscriber(ctx: WarehouseContext) -> None:
    """Subscribes each tracking number recorded since with Kuaidi100 (so that it pushes its scans)."""
    if ctx.kuaidi100 is None:
        return
    await Worker("kuaidi100-subscriptions", partial(subscribe_due, ctx), ctx.settings.kuaidi100_poll_s).run()


async def nothing_to_subscribe(ctx: WarehouseContext) -> bool:
    return ctx.kuaidi100 is None or not await repository.subscriptions_waiting(ctx.pool)


async def subscribe_due(ctx: WarehouseContext) -> float | None:
    """One round: lease due subscriptions, ask Kuaidi100 (concurrently), record the answers together.
    0 after asking (more may be due), else the seconds until the next is due."""
    due = await repository.claim_subscriptions(ctx.pool, SUBSCRIBE_BATCH, SUBSCRIBE_LEASE_S)
    if not due:
        wait = await repository.next_subscription_in(ctx.pool)
        return None if wait is None else max(wait, 0.01)
    outcomes = await asyncio.gather(*(subscribe(ctx, d) for d in due))
    async with ctx.pool.acquire() as conn, conn.transaction():
        rows = [subscription_row(d, o, ctx.settings.kuaidi100_retry_s) for d, o in zip(due, outcomes, strict=True)]
        await repository.record_subscriptions(conn, rows)
    return 0


async def subscribe(ctx: WarehouseContext, d: DueSubscription) -> SubscriptionOutcome:
    s = ctx.settings
    assert ctx.kuaidi100 is not None and s.kuaidi100_key is not None and s.kuaidi100_callback_url
    param = rules.kuaidi100_subscription(
        d.tracking_no,
        d.carrier,
        s.kuaidi100_key.get_secret_value(),
        s.kuaidi100_callback_url,
        s.kuaidi100_salts[0].get_secret_value(),
    )
    form = {"schema": "json", "param": json.dumps(param, ensure_ascii=False)}
    try:
        r = await ctx.kuaidi100.post(s.kuaidi100_poll_url, data=form)
        answer = r.json() if r.headers.get("content-type", "").startswith(("application/json", "text/")) else None
        outcome = rules.subscription_outcome(r.status_code, answer if isinstance(answer, dict) else None)
    except (httpx.HTTPError, ValueError) as exc:
        outcome = rules.subscription_outcome(None, None)
        log.warning("kuaidi100 subscription got no answer", tracking_no=d.tracking_no, error=type(exc).__name__)
    if not isinstance(outcome, Subscribed):
        log.warning("kuaidi100 subscription not made", tracking_no=d.tracking_no, outcome=repr(outcome))
    return outcome


def subscription_row(d: DueSubscription, o: SubscriptionOutcome, retry_s: float) -> tuple[str, str, float, str | None]:
    match o:
        case Subscribed():
            return (d.tracking_no, "subscribed", 0.0, None)
        case SubscribeLater(error):
            return (d.tracking_no, "pending", rules.subscription_retry_in(d.attempts, retry_s), error)
        case SubscriptionRefused(error):
            return (d.tracking_no, "failed", 0.0, error)
    raise AssertionError(f"unhandled subscription outcome {o!r}")


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


# -- an exchange's replacement: shipped, its outgoing parcel's scans, out of stock ------------------------


async def match_outgoing(conn: Conn, scans: Sequence[CarrierScan]) -> None:
    """Scans of outgoing replacement parcels (matched by their tracking number) attach to their exchange
    and are not published as the return's parcel scans; the first `delivered` one publishes
    exchange.replacement_delivered (once). Scans of no known parcel stay parked."""
    if not scans:
        return
    outgoing = await repository.outgoing_holders(conn, {s.tracking_no for s in scans})
    by_parcel: dict[str, list[CarrierScan]] = {}
    for s in scans:
        if s.tracking_no in outgoing:
            by_parcel.setdefault(s.tracking_no, []).append(s)
    now = datetime.now(UTC)
    delivered: dict[UUID, CarrierScan] = {}
    published: list[Message] = []
    for tracking_no, parcel_scans in by_parcel.items():
        out = outgoing[tracking_no]
        scan = rules.delivery_scan(out.delivered, parcel_scans)
        if scan is not None:
            delivered[out.return_id] = scan
            published.append(events.replacement_delivered(out.return_id, out.shipment_id, scan, now))
    matched = [(s.scan_id, outgoing[t].return_id) for t, ss in by_parcel.items() for s in ss]
    await repository.mark_outgoing(conn, matched, delivered)
    await enqueue(conn, published)


@dataclass(frozen=True)
class ShipmentIntake:
    device_id: str
    warehouse_id: str
    body: ReplacementBody
    correlation_id: str


async def ship_replacement(ctx: WarehouseContext, it: ShipmentIntake) -> ShipmentOutcome:
    """An exchange's replacement handed to a courier: recorded once, published with the warehouse's
    attestation of the stock leaving; scans of its parcel that came before it are matched now."""
    body = it.body
    fingerprint = rules.shipment_fingerprint(body)
    async with ctx.pool.acquire() as conn, conn.transaction():
        await repository.lock_tracking(conn, [body.tracking_no])
        facts = await repository.shipment_facts(conn, body.return_id, body.shipment_id, body.tracking_no)
        expected = (await repository.expected_lines(conn, [body.return_id])).get(body.return_id, [])
        decision = rules.decide_shipment(facts, expected, body, fingerprint)
        if not isinstance(decision, ShipReplacement):
            return decision
        now = datetime.now(UTC)
        replacement = Replacement(
            shipment_id=body.shipment_id or f"shp-{uuid4().hex}",
            return_id=body.return_id,
            warehouse_id=it.warehouse_id,
            device_id=it.device_id,
            packed_by=body.packed_by,
            carrier=body.carrier,
            tracking_no=body.tracking_no,
            shipped_at=body.shipped_at or now,
            fingerprint=fingerprint,
            correlation_id=it.correlation_id,
            lines=[(x.sku, x.qty) for x in body.lines],
        )
        await repository.insert_replacement(conn, replacement)
        await enqueue(conn, events.replacement_events(replacement, now))
        await match_outgoing(conn, await repository.parked_scans_for(conn, [body.tracking_no]))
    log.info("replacement shipped", return_id=str(body.return_id), shipment_id=replacement.shipment_id)
    return ShipmentAccepted(replacement.shipment_id, body.return_id, body.tracking_no)


@dataclass(frozen=True)
class OutOfStockIntake:
    device_id: str
    warehouse_id: str
    body: OutOfStockBody
    correlation_id: str


async def report_out_of_stock(ctx: WarehouseContext, it: OutOfStockIntake) -> OutOfStockOutcome:
    """No replacement to send: reported once, published for a person (convert to a refund or wait)."""
    b = it.body
    async with ctx.pool.acquire() as conn, conn.transaction():
        facts = await repository.shipment_facts(conn, b.return_id, None, "")
        expected = (await repository.expected_lines(conn, [b.return_id])).get(b.return_id, [])
        reported = await repository.out_of_stock_reported(conn, b.return_id)
        decision = rules.decide_out_of_stock(facts, expected, reported, b)
        if isinstance(decision, OutOfStockAccepted):
            await repository.insert_out_of_stock(conn, b.return_id, b.skus, it.warehouse_id, b.reported_by, b.note)
            event = events.out_of_stock(
                b.return_id, b.skus, it.warehouse_id, b.reported_by, b.note, it.correlation_id, datetime.now(UTC)
            )
            await enqueue(conn, [event])
        return decision
