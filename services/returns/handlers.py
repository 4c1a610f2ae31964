"""The steps of the returns service: accept platform webhooks (a group commit), record a platform's
tracking/cancel event, and put every lifecycle event on its return's timeline. Each reads as
load → pure decision (rules) → save (+ events through the outbox)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any
from uuid import UUID

import asyncpg

from contracts.events import Message
from returnflow.batching import GroupCommitter
from returnflow.consumer import Batch
from returnflow.db import Conn
from returnflow.links import is_token_shaped, link_token, token_digest
from returnflow.logging import get_logger
from returnflow.outbox import enqueue
from returnflow.settings import Settings
from returnflow.shops import Shops
from services.returns import events, repository, rules, timeline
from services.returns.repository import CustomerReturn
from services.returns.rules import Intake, IntakeResult, Progress, RegisterTracking, TooLateToCancel
from services.returns.schemas import ReturnEventWebhook
from services.returns.settings import ReturnsSettings
from services.returns.shopify import ShopifyAdmin

log = get_logger("returns")


@dataclass
class ReturnsContext:
    pool: asyncpg.Pool
    settings: ReturnsSettings
    runtime_settings: Settings  # webhook secrets and body limits
    intake: GroupCommitter[Intake, IntakeResult]
    link_secret: bytes | None = None  # RETURNFLOW_CUSTOMER_LINK_SECRET: customer links work when set
    shops: Shops = field(default_factory=Shops)  # the shops file in force (names, Shopify credentials)
    shopify: ShopifyAdmin = field(default_factory=ShopifyAdmin)  # reads orders for Shopify's returns/request

    def shop_name(self, shop_id: str) -> str:
        """The shop's name for customers: the shops file's, else RETURNFLOW_RETURNS_SHOP_NAMES, else its id."""
        shop = self.shops.get(shop_id)
        return (shop.name if shop else None) or self.settings.shop_names.get(shop_id) or shop_id

    def link_digest(self, return_id: UUID) -> bytes | None:
        return token_digest(link_token(self.link_secret, return_id)) if self.link_secret else None


# -- the timeline consumer ---------------------------------------------------------------------------


async def apply_timeline(ctx: ReturnsContext, conn: Conn, batch: Batch) -> None:
    """Every lifecycle event becomes a timeline entry and may move its return to a later status (out
    of order too: a status never moves back)."""
    await put_on_timeline(conn, batch.events)


async def put_on_timeline(conn: Conn, lifecycle: Sequence[Message]) -> None:
    entries = [timeline.entry(e) for e in lifecycle]
    await repository.add_timeline(conn, entries)
    kinds = await repository.kinds_of(conn, {e.return_id for e in entries})
    statuses = rules.latest_statuses((e.return_id, kinds.get(e.return_id, ""), e.type, e.data) for e in entries)
    await repository.advance_status(conn, statuses)


# -- intake: platform webhooks, many in one transaction ------------------------------------------------


def intake_step(link_secret: bytes | None) -> partial[Any]:
    """accept_returns for the group committer, storing each new return's customer-link digest."""
    return partial(accept_returns, link_secret=link_secret)


async def accept_returns(conn: Conn, items: Sequence[Intake], link_secret: bytes | None = None) -> list[IntakeResult]:
    """New returns inserted with their lines, link digest, return-requested event and timeline entry; a
    webhook delivered again, or naming a return accepted before, is answered with that return."""
    now, known = await repository.now_and_known_deliveries(conn, [it.delivery for it in items])
    candidates = rules.new_return_candidates(items, known)
    digests = (
        {rid: token_digest(link_token(link_secret, rid)) for rid, _ in candidates.values()} if link_secret else None
    )
    created = await repository.insert_returns(conn, list(candidates.values()), rules.REQUESTED, digests)
    return_of = {key: rid for key, (rid, _) in candidates.items()}
    # lost to a return accepted earlier (or by a concurrent batch): answer with that return
    return_of |= await repository.returns_by_platform_key(conn, [k for k, r in return_of.items() if r not in created])
    new = [(rid, it) for rid, it in candidates.values() if rid in created]
    requested = [events.return_requested(rid, it, now) for rid, it in new]
    await enqueue(conn, requested)
    results, deliveries = rules.intake_results(items, known, return_of, created)
    await repository.record_accepted(conn, new, [timeline.entry(e) for e in requested], deliveries)
    return results


# -- a platform's event on a known return: tracking number registered, or cancelled -------------------


@dataclass(frozen=True)
class ReturnEvent:
    source: str  # e.g. "generic-events": the deliveries of this endpoint, apart from the returns webhook
    delivery_id: str
    platform_return_id: str
    body: ReturnEventWebhook
    correlation_id: str


@dataclass(frozen=True)
class UnknownReturn:
    pass


@dataclass(frozen=True)
class AlreadyDone:
    return_id: UUID
    status: str


@dataclass(frozen=True)
class Recorded:
    return_id: UUID
    event_type: str


ReturnEventOutcome = UnknownReturn | AlreadyDone | TooLateToCancel | Recorded


async def record_return_event(ctx: ReturnsContext, cmd: ReturnEvent) -> ReturnEventOutcome:
    async with ctx.pool.acquire() as conn, conn.transaction():
        ret = await repository.lock_by_platform_key(conn, cmd.body.shop_id, cmd.platform_return_id)
        if ret is None:
            return UnknownReturn()
        if await repository.find_delivery(conn, cmd.source, cmd.delivery_id):
            return AlreadyDone(ret.id, ret.status.name)
        decision = rules.decide_return_event(ret.status, cmd.body)
        if isinstance(decision, rules.AlreadyCancelled):
            return AlreadyDone(ret.id, ret.status.name)
        if isinstance(decision, TooLateToCancel):
            return decision
        event = await record_decision(conn, ret.id, decision, cmd.correlation_id)
        await repository.record_deliveries(conn, [(cmd.source, cmd.delivery_id, ret.id)])
        return Recorded(ret.id, event.type)


@dataclass(frozen=True)
class ShopifyReturnEvent:
    """Shopify's returns/decline or returns/close delivery for a return it requested before."""

    delivery_id: str  # X-Shopify-Webhook-Id
    shop_id: str
    platform_return_id: str
    topic: str
    reason: str
    correlation_id: str


SHOPIFY_EVENTS = "shopify-events"  # the deliveries of Shopify's lifecycle topics (as the events route's)


async def record_shopify_event(ctx: ReturnsContext, cmd: ShopifyReturnEvent) -> UnknownReturn | AlreadyDone | Recorded:
    """A declined or closed Shopify return on its returnflow return (rules.decide_shopify_topic); the same
    delivery again, or news the return is already past, changes nothing."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        ret = await repository.lock_by_platform_key(conn, cmd.shop_id, cmd.platform_return_id)
        if ret is None:
            return UnknownReturn()
        if await repository.find_delivery(conn, SHOPIFY_EVENTS, cmd.delivery_id):
            return AlreadyDone(ret.id, ret.status.name)
        decision = rules.decide_shopify_topic(cmd.topic, ret.status, cmd.reason)
        await repository.record_deliveries(conn, [(SHOPIFY_EVENTS, cmd.delivery_id, ret.id)])
        if not isinstance(decision, rules.Cancel):
            return AlreadyDone(ret.id, ret.status.name)
        event = await record_decision(conn, ret.id, decision, cmd.correlation_id)
        return Recorded(ret.id, event.type)


async def already_accepted(
    ctx: ReturnsContext, source: str, delivery_id: str, platform_key: tuple[str, str]
) -> UUID | None:
    """The return an earlier delivery with this id, or an earlier return with this (shop, platform return
    id), was accepted as (None: neither) — a redelivery is answered without reading anything again."""
    async with ctx.pool.acquire() as conn:
        known = await repository.known_deliveries(conn, [(source, delivery_id)])
        if known:
            return next(iter(known.values()))
        found = await repository.returns_by_platform_key(conn, [platform_key])
        return found.get(platform_key)


async def record_decision(
    conn: Conn, return_id: UUID, decision: RegisterTracking | rules.Cancel, correlation_id: str
) -> Message:
    """A tracking number or a cancellation, whoever sent it (a platform, the customer's page): the same
    event, the same timeline entry, the return's tracking number."""
    event = events.return_event(return_id, decision, correlation_id, datetime.now(UTC))
    if isinstance(decision, RegisterTracking):
        await repository.set_tracking_no(conn, return_id, decision.tracking_no)
    await enqueue(conn, [event])
    await put_on_timeline(conn, [event])
    return event


# -- customer links: every return findable by its link -------------------------------------------------


async def link_backfill(ctx: ReturnsContext) -> None:
    """The start-up worker that gives older returns their link digest (see backfill_link_digests)."""
    count = await backfill_link_digests(ctx)
    if count:
        log.info("customer links made for earlier returns", returns=count)


async def backfill_link_digests(ctx: ReturnsContext, chunk: int = 1000) -> int:
    """Returns accepted before the link secret was set (or before links existed) get their digest, so
    the links in their next texts open. Runs once at start, as a worker; the count done."""
    done = 0
    while ctx.link_secret:
        async with ctx.pool.acquire() as conn, conn.transaction():
            ids = await repository.returns_without_link(conn, chunk)
            await repository.set_link_digests(conn, {rid: d for rid in ids if (d := ctx.link_digest(rid))})
        done += len(ids)
        if len(ids) < chunk:
            break
    return done


@dataclass(frozen=True)
class LinkRevoked:
    return_id: UUID
    revoked_at: datetime
    revoked_by: str
    already: bool  # revoked before (by revoked_by): nothing changed


async def revoke_customer_link(ctx: ReturnsContext, return_id: UUID, actor: str) -> LinkRevoked | UnknownReturn:
    """A person revokes a return's customer link (a customer reports a forwarded text): from now on it
    answers "this link is no longer valid" (410). Idempotent: a second revocation changes nothing and
    names the first."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        found = await repository.lock_link_revocation(conn, return_id)
        if found is None:
            return UnknownReturn()
        revoked_at, revoked_by = found
        if revoked_at is not None:
            return LinkRevoked(return_id, revoked_at, revoked_by or "unknown", already=True)
        revoked_at = await repository.revoke_link(conn, return_id, actor)
        await repository.add_timeline(conn, [timeline.link_revoked(return_id, revoked_at, actor)])
    log.info("customer link revoked", return_id=str(return_id), actor=actor)
    return LinkRevoked(return_id, revoked_at, actor, already=False)


# -- the customer's page: one return, found by its link ----------------------------------------------


@dataclass(frozen=True)
class LinkInvalid:
    """No return has this link (never had: 404)."""


@dataclass(frozen=True)
class LinkGone:
    """The link's return exists but the link expired or was revoked (410), in the customer's locale."""

    locale: str | None
    state: rules.LinkState


@dataclass(frozen=True)
class CustomerPage:
    ret: CustomerReturn
    progress: Progress
    next_action: rules.NextAction
    can_register: bool
    notice: str | None = None  # registered, already_known, too_many
    errors: dict[str, str] = field(default_factory=dict)  # field -> error key of the tracking form
    form: dict[str, str] = field(default_factory=dict)  # what the customer typed, shown again
    retry_after_s: float | None = None


async def _open(
    ctx: ReturnsContext, conn: Conn, token: str, now: datetime, lock: bool = False
) -> CustomerPage | LinkInvalid | LinkGone:
    if not is_token_shaped(token) or not ctx.link_secret:
        return LinkInvalid()
    ret = await repository.customer_return(conn, token_digest(token), lock=lock)
    if ret is None:
        return LinkInvalid()
    p = rules.progress(ret.kind, ret.facts)
    ttl = timedelta(days=ctx.settings.link_ttl_days_after_close)
    state = rules.link_state(now, ret.link_revoked_at, p.closed_at, ttl)
    if state != "valid":
        return LinkGone(ret.locale, state)
    action = rules.next_action(ret.kind, p)
    return CustomerPage(ret, p, action, rules.can_register_tracking(ret.kind, p, ret.tracking_no))


async def customer_page(ctx: ReturnsContext, token: str) -> CustomerPage | LinkInvalid | LinkGone:
    async with ctx.pool.acquire() as conn:
        return await _open(ctx, conn, token, datetime.now(UTC))


@dataclass(frozen=True)
class TrackingSubmission:
    token: str
    carrier: str
    tracking_no: str
    submission_id: str  # the form's one-time id: a double submit is one registration
    correlation_id: str


async def register_customer_tracking(
    ctx: ReturnsContext, sub: TrackingSubmission
) -> CustomerPage | LinkInvalid | LinkGone:
    """The customer's courier and tracking number from the page: rate limited per return, validated,
    only while a parcel is expected and none is known; recorded exactly as a platform's registration
    (record_decision). The page to show next, with a notice or the form's errors."""
    now = datetime.now(UTC)
    async with ctx.pool.acquire() as conn, conn.transaction():
        page = await _open(ctx, conn, sub.token, now, lock=True)
        if not isinstance(page, CustomerPage):
            return page
        rid = page.ret.id
        window = timedelta(seconds=ctx.settings.tracking_window_s)
        tried = await repository.page_attempts_since(conn, rid, now - window)
        wait = rules.retry_after(tried, now, ctx.settings.tracking_attempts, window)
        form = {"carrier": sub.carrier, "tracking_no": sub.tracking_no}
        if wait is not None:
            return _with(page, notice="too_many", form=form, retry_after_s=wait)
        await repository.record_page_attempt(conn, rid, now)
        source = "customer-page"
        if await repository.find_delivery(conn, source, sub.submission_id):
            return _with(page, notice="registered")
        if not page.can_register:
            return _with(page, notice="already_known")
        entry = rules.parse_tracking(sub.carrier, sub.tracking_no)
        if not isinstance(entry, rules.TrackingEntry):
            return _with(page, errors=entry, form=form)
        await record_decision(conn, rid, RegisterTracking(entry.tracking_no, entry.carrier), sub.correlation_id)
        await repository.record_deliveries(conn, [(source, sub.submission_id, rid)])
        return _with(page, notice="registered", can_register=False)


def _with(page: CustomerPage, **changes: Any) -> CustomerPage:
    return replace(page, **changes)
