"""notify's steps: lifecycle events in -> one message per return and step (and the reminders of returns
whose goods must come back), the sender worker (sender.py), and what the provider's webhooks tell:
replies change a number's consent, receipts record delivery. Decisions are in rules.py, SQL in
repository.py, events in events.py."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from uuid import UUID

import asyncpg

from contracts.catalog import CATALOG
from contracts.events import (
    ExchangeOutOfStock,
    Message,
    ParcelScanned,
    RefundDecided,
    RefundEscalated,
    RefundIssued,
    ReplacementShipped,
    ReturnCancelled,
    ReturnReceived,
    ReturnRequested,
)
from returnflow.consumer import Batch
from returnflow.db import Conn
from returnflow.links import customer_link
from returnflow.logging import get_logger, mask_phone
from returnflow.outbox import enqueue
from returnflow.service import Runtime
from returnflow.settings import Settings
from returnflow.shops import Shops
from services.notify import events, repository
from services.notify.events import SmsRef
from services.notify.providers import DeliveryReport, InboundSms, SmsProvider, describe, make_provider
from services.notify.render import Templates
from services.notify.rules import (
    Keyword,
    Lifecycle,
    Planned,
    classify_keyword,
    needs_reminders,
    normalize_keyword,
    reminders,
    undelivered_news,
)
from services.notify.sender import Clock, Sender
from services.notify.settings import NotifySettings
from services.notify.webhook_sender import WebhookSender, record_deliveries

log = get_logger("returnflow.notify")

CONSUMED = [t.name for t in CATALOG if "notify" in t.consumers]


@dataclass
class NotifyContext:
    pool: asyncpg.Pool
    settings: NotifySettings
    runtime: Settings  # webhook body limit, the public base URL
    clock: Clock
    templates: Templates
    provider: SmsProvider
    sender: Sender
    shops: Shops  # the shops file in force (re-read by the runtime): the merchants' webhook endpoints
    webhooks: WebhookSender


async def build_context(rt: Runtime, settings: NotifySettings) -> NotifyContext:
    clock = Clock(settings.clock_offset_s)
    templates = Templates(settings.templates_dir, settings.default_locale)
    templates.check()  # a broken edit stops the service here, not in a customer's message
    provider = make_provider(settings, rt.settings)
    secret = rt.settings.customer_link_secret
    link_secret = secret.get_secret_value().encode() if secret is not None else None
    base_url = rt.settings.public_base_url
    if not (base_url and link_secret):
        log.warning(
            "SMS go without a link to the customer's page: set RETURNFLOW_PUBLIC_BASE_URL and "
            "RETURNFLOW_CUSTOMER_LINK_SECRET"
        )
    sender = Sender(
        rt.pool,
        provider,
        templates,
        clock,
        settings,
        rt.dsn,
        link_for=partial(customer_link, base_url, link_secret),
        shops=rt.shops,
    )
    log.info("SMS provider ready", provider=describe(provider), locales=list(templates.locales))
    # real time: the service clock's offset is for SMS quiet hours in demos; a merchant checks webhook-timestamp
    webhooks = WebhookSender(rt.pool, rt.shops, Clock(), settings, rt.dsn)
    return NotifyContext(rt.pool, settings, rt.settings, clock, templates, provider, sender, rt.shops, webhooks)


async def close_context(ctx: NotifyContext) -> None:
    await ctx.webhooks.close()
    await ctx.sender.close()
    await ctx.provider.close()


# -- lifecycle events -> messages -------------------------------------------------------------------------


def lifecycle_of(batch: Batch) -> Lifecycle:
    return Lifecycle(
        requested=batch.of(ReturnRequested),
        scanned=batch.of(ParcelScanned),
        received=batch.of(ReturnReceived),
        escalated=batch.of(RefundEscalated),
        issued=batch.of(RefundIssued),
        cancelled=batch.of(ReturnCancelled),
        out_of_stock=batch.of(ExchangeOutOfStock),
        shipped=batch.of(ReplacementShipped),
        decided=batch.of(RefundDecided),
    )


async def apply_lifecycle(ctx: NotifyContext, conn: Conn, batch: Batch) -> None:
    """Schedule the messages lifecycle events ask for. Order-independent within and across batches:
    flags first (goods moving, cancelled), then recipients, then messages and reminders."""
    now, lifecycle = ctx.clock.now(), lifecycle_of(batch)
    moving, closed = lifecycle.goods_moving(), lifecycle.closed()
    await repository.mark_returns(conn, moving, closed)
    flags = await repository.upsert_requested(conn, lifecycle.requested)
    messages = lifecycle.news(now) + due_reminders(lifecycle.requested, flags, ctx.settings.reminder_intervals_s)
    await repository.add_messages(conn, messages)
    await repository.cancel_reminders(conn, moving + closed)
    if messages or closed:
        await repository.wake_sender(conn)
    await record_deliveries(conn, ctx.shops, batch.events, ctx.webhooks.clock.now(), ctx.settings)  # merchant webhooks


def due_reminders(
    requested: Sequence[ReturnRequested], flags: Mapping[UUID, asyncpg.Record], intervals_s: Sequence[float]
) -> list[Planned]:
    """The reminders of requested returns whose goods must come back and have not moved yet (`flags`: the
    return's kind, goods_moving and closed as they stand, events that came before the request included)."""
    due: list[Planned] = []
    for e in requested:
        f = flags.get(e.return_id)
        if f is not None and needs_reminders(f["kind"], f["goods_moving"], f["closed"]):
            due += reminders(e, intervals_s)
    return due


# -- the sender ----------------------------------------------------------------------------------------------


async def send_sms(ctx: NotifyContext) -> None:
    """Background worker: claims due messages, sends them, records the outcomes (sender.py)."""
    await ctx.sender.run(grace_s=ctx.settings.http_timeout_s + 2)


async def send_webhooks(ctx: NotifyContext) -> None:
    """Background worker: delivers the merchants' webhooks (webhook_sender.py). At a stop, attempts under way
    get a few seconds to finish; one cut short is made again after the restart (same webhook-id)."""
    await ctx.webhooks.run(grace_s=min(ctx.settings.webhook_timeout_s, 5.0))


async def workers_idle(ctx: NotifyContext) -> bool:
    """Neither the SMS sender nor the webhook worker has work due now."""
    return await sender_idle(ctx) and await ctx.webhooks.idle()


async def sender_idle(ctx: NotifyContext) -> bool:
    """Nothing for the sender to do now: no message due, none being sent (a reminder due tomorrow is not
    work now). Part of the service's idle report (`Runtime.idle`)."""
    return not await repository.work_due(ctx.pool, ctx.clock.now())


# -- the provider's webhooks ---------------------------------------------------------------------------------


async def record_replies(ctx: NotifyContext, replies: Sequence[InboundSms]) -> None:
    """Customers' replies: a STOP keyword opts the number out, START opts it back in; each reply once."""
    now = ctx.clock.now()
    async with ctx.pool.acquire() as conn, conn.transaction():
        applied = [await _record_reply(conn, ctx.provider.name, reply, now) for reply in replies]
    for reply, (keyword, fresh) in zip(replies, applied, strict=True):
        log.info("inbound SMS", phone=mask_phone(reply.phone), keyword=keyword, duplicate=not fresh)


async def _record_reply(conn: Conn, provider: str, reply: InboundSms, now: datetime) -> tuple[Keyword | None, bool]:
    keyword = classify_keyword(reply.text)
    fresh = await repository.record_inbound(conn, provider, reply.provider_id, reply.phone, keyword, now)
    if fresh and keyword is not None:
        opted_out = keyword == "opt_out"
        await repository.set_consent(conn, reply.phone, opted_out, normalize_keyword(reply.text), provider, now)
    return keyword, fresh


async def record_receipts(ctx: NotifyContext, receipts: Sequence[DeliveryReport]) -> None:
    """Delivery receipts: stored on their message; "not delivered" gives one sms.failed, however often
    the receipt comes."""
    now = ctx.clock.now()
    async with ctx.pool.acquire() as conn, conn.transaction():
        failed = [await _record_receipt(conn, ctx.provider.name, receipt, now) for receipt in receipts]
        await enqueue(conn, [e for e in failed if e is not None])


async def _record_receipt(conn: Conn, provider: str, receipt: DeliveryReport, now: datetime) -> Message | None:
    row = await repository.record_delivery(
        conn, provider, receipt.provider_message_id, receipt.status, receipt.error, now
    )
    if row is None:
        log.info("delivery receipt for an unknown message", provider_message_id=receipt.provider_message_id)
        return None
    if not undelivered_news(receipt.delivered, receipt.status, row["delivery_status"]):
        return None
    ref = SmsRef(row["return_id"], row["correlation_id"], row["step"], row["phone"] or "", row["locale"] or "")
    return events.not_delivered(ref, now, provider, receipt.status, receipt.error)
