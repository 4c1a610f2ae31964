"""notify service wiring: lifecycle events in, SMS out (one per return and step, in the customer's
language, never at night, never after STOP), reminders on a PostgreSQL schedule, and the provider's
inbound-SMS and delivery-status webhooks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

from fastapi import FastAPI, Request
from fastapi.responses import Response

from contracts.catalog import CATALOG
from contracts.events import (
    Message,
    ParcelScanned,
    RefundEscalated,
    RefundIssued,
    ReturnCancelled,
    ReturnReceived,
    ReturnRequested,
    SmsFailed,
)
from returnflow.consumer import Delivery, Handler
from returnflow.http import BodyTooLarge, HttpProblem, error, json_response, read_body
from returnflow.logging import get_logger, mask_phone
from returnflow.outbox import enqueue
from returnflow.service import ConsumerSpec, Runtime, ServiceSpec, create_app
from returnflow.signing import SignatureError
from services.notify import storage
from services.notify.domain import (
    PARCEL_SEEN,
    RECEIVED,
    REFUND_PAID,
    REQUESTED,
    UNDER_REVIEW,
    classify_keyword,
    kind_of,
    moving,
    needs_reminders,
    normalize_keyword,
    rank_of,
    reminder_schedule,
)
from services.notify.providers import BadWebhook, WebhookRequest, describe, make_provider
from services.notify.render import Templates
from services.notify.sender import Clock, Sender

T = TypeVar("T")

log = get_logger("returnflow.notify")

CONSUMED = [t.name for t in CATALOG if "notify" in t.consumers]


def _message(e: Message, step: str, due: Any, params: dict[str, Any]) -> storage.NewMessage:
    return storage.NewMessage(
        return_id=e.return_id,
        step=step,
        kind=kind_of(step),
        rank=rank_of(step),
        due_at=due,
        params=params,
        correlation_id=e.correlation_id,
        source_event_id=str(e.event_id),
    )


def lifecycle_handler(rt: Runtime) -> Handler:
    """Turn lifecycle events into scheduled messages. Order-independent within and across batches:
    flags first (goods moving, cancelled), then recipients, then messages and reminders."""
    clock: Clock = rt.state["clock"]
    settings = rt.settings

    async def handle(conn: Any, batch: list[Delivery]) -> None:
        now = clock.now()
        requested: list[ReturnRequested] = []
        msgs: list[storage.NewMessage] = []
        goods_moving: list[UUID] = []
        closed: list[UUID] = []
        for d in batch:
            e = d.event
            if isinstance(e, ReturnRequested):
                requested.append(e)
                msgs.append(_message(e, REQUESTED, now, {"tracking_no": e.tracking_no}))
            elif isinstance(e, ParcelScanned):
                if moving(e.scan_code):
                    goods_moving.append(e.return_id)
                    params = {"carrier": e.carrier, "tracking_no": e.tracking_no, "location": e.location}
                    msgs.append(_message(e, PARCEL_SEEN, now, params))
            elif isinstance(e, ReturnReceived):
                goods_moving.append(e.return_id)
                got = sum(line.qty_received for line in e.lines)
                msgs.append(_message(e, RECEIVED, now, {"items_received": got}))
            elif isinstance(e, RefundIssued):
                goods_moving.append(e.return_id)  # paid: no more nudging to ship
                msgs.append(_message(e, REFUND_PAID, now, {"amount_minor": e.amount, "currency": e.currency}))
            elif isinstance(e, RefundEscalated):
                msgs.append(_message(e, UNDER_REVIEW, now, {"amount_minor": e.amount, "currency": e.currency}))
            elif isinstance(e, ReturnCancelled):
                closed.append(e.return_id)
        await storage.mark_returns(conn, goods_moving, closed)
        flags = await storage.upsert_requested(
            conn,
            [
                storage.RequestedRow(
                    return_id=e.return_id,
                    shop_id=e.shop_id,
                    shop_name=e.shop_name or "",
                    kind=e.kind.value,
                    order_id=e.order_id,
                    platform_return_id=e.platform_return_id,
                    items=sum(line.qty for line in e.lines),
                    phone=e.customer.phone,
                    locale=e.customer.locale,
                    timezone=e.customer.timezone,
                    requested_at=e.requested_at,
                    correlation_id=e.correlation_id,
                )
                for e in requested
            ],
        )
        for e in requested:
            f = flags.get(e.return_id)
            if f is not None and needs_reminders(f["kind"], f["goods_moving"], f["closed"]):
                for step, due in reminder_schedule(e.requested_at, settings.notify_reminder_intervals_s):
                    msgs.append(_message(e, step, due, {}))
        await storage.add_messages(conn, msgs)
        await storage.cancel_reminders(conn, goods_moving + closed)
        if msgs or closed:
            await storage.wake_sender(conn)

    return handle


# -- start / stop ---------------------------------------------------------------------------------------


async def _start(rt: Runtime) -> None:
    s = rt.settings
    rt.state.setdefault("clock", Clock(s.notify_clock_offset_s))
    templates = Templates(s.notify_templates_dir, s.notify_default_locale)
    templates.check()  # a broken edit stops the service here, not in a customer's message
    provider = make_provider(s)
    rt.state["templates"] = templates
    rt.state["provider"] = provider
    rt.state["sender"] = Sender(rt.pool, provider, templates, rt.state["clock"], s)
    log.info("SMS provider ready", provider=describe(provider), locales=list(templates.locales))


async def _stop(rt: Runtime) -> None:
    sender: Sender | None = rt.state.get("sender")
    if sender is not None:
        await sender.stop()
        task = rt.state.get("sender_task")
        if task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(task), rt.settings.notify_http_timeout_s + 2)
        await sender.close()
    provider = rt.state.get("provider")
    if provider is not None:
        await provider.close()


async def send_sms(rt: Runtime) -> None:
    """Background worker: the sender loop (claims due messages, sends, records outcomes)."""
    sender: Sender = rt.state["sender"]
    rt.state["sender_task"] = asyncio.current_task()
    await sender.run(rt.dsn)


# -- HTTP ------------------------------------------------------------------------------------------------


def _called_url(request: Request, public_base_url: str | None) -> str:
    """The URL the provider called (what Twilio signs): behind a proxy, the configured public base."""
    if not public_base_url:
        return str(request.url)
    url = public_base_url.rstrip("/") + request.url.path
    return url + ("?" + request.url.query if request.url.query else "")


def routes(app: FastAPI, rt: Runtime) -> None:
    settings = rt.settings

    async def provider_webhook(request: Request, parse: Callable[[WebhookRequest], T], what: str) -> T:
        """Read a provider's callback and let the provider check its signature and parse it."""
        try:
            raw = await read_body(request, settings.webhook_max_body_bytes)
        except BodyTooLarge:
            raise HttpProblem(413, f"body larger than {settings.webhook_max_body_bytes} bytes") from None
        req = WebhookRequest(
            url=_called_url(request, settings.public_base_url),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=raw,
            query=dict(request.query_params),
        )
        try:
            return parse(req)
        except SignatureError as exc:
            raise HttpProblem(401, str(exc)) from None
        except BadWebhook as exc:
            raise HttpProblem(422, f"not {what}", [{"field": "body", "message": str(exc)}]) from None

    @app.post(
        "/v1/webhooks/sms/inbound",
        tags=["webhooks"],
        summary="A customer's reply (STOP / 退订 / TD ... opt out, START opts back in); provider-signed",
    )
    async def inbound(request: Request) -> Response:
        provider = rt.state["provider"]
        items = await provider_webhook(request, provider.parse_inbound, "an inbound SMS")
        now = rt.state["clock"].now()
        applied = []
        async with rt.pool.acquire() as conn, conn.transaction():
            for item in items:
                keyword = classify_keyword(item.text)
                fresh = await storage.record_inbound(conn, provider.name, item.provider_id, item.phone, keyword, now)
                if fresh and keyword is not None:
                    await storage.set_consent(
                        conn, item.phone, keyword == "opt_out", normalize_keyword(item.text), provider.name, now
                    )
                applied.append((item.phone, keyword, fresh))
        for phone, keyword, fresh in applied:
            log.info("inbound SMS", phone=mask_phone(phone), keyword=keyword, duplicate=not fresh)
        ans = provider.answer("inbound")
        return Response(ans.body, status_code=ans.status, media_type=ans.media_type)

    @app.post("/v1/webhooks/sms/status", tags=["webhooks"], summary="Delivery receipts; provider-signed")
    async def status(request: Request) -> Response:
        provider = rt.state["provider"]
        reports = await provider_webhook(request, provider.parse_status, "a delivery receipt")
        now = rt.state["clock"].now()
        async with rt.pool.acquire() as conn, conn.transaction():
            events: list[Message] = []
            for rep in reports:
                row = await storage.record_delivery(
                    conn, provider.name, rep.provider_message_id, rep.status, rep.error, now
                )
                if row is None:
                    log.info("delivery receipt for an unknown message", provider_message_id=rep.provider_message_id)
                    continue
                if rep.delivered is False and row["delivery_status"] != rep.status:  # repeats: no event
                    events.append(
                        SmsFailed(
                            occurred_at=now,
                            return_id=row["return_id"],
                            correlation_id=row["correlation_id"],
                            step=row["step"],
                            phone_masked=mask_phone(row["phone"] or ""),
                            locale=row["locale"] or "",
                            provider=provider.name,
                            error=f"not delivered: {rep.status}"
                            + (f" ({rep.error})" if rep.error and rep.error != rep.status else ""),
                        )
                    )
            await enqueue(conn, events)
        ans = provider.answer("status")
        return Response(ans.body, status_code=ans.status, media_type=ans.media_type)

    @app.get(
        "/v1/returns/{return_id}/sms", tags=["sms"], summary="The SMS of a return: sent, waiting, not sent and why"
    )
    async def list_sms(return_id: str) -> Response:
        try:
            rid = UUID(return_id)
        except ValueError:
            return error(404, f"unknown return {return_id!r}")
        rows = await storage.messages_of(rt.pool, rid)
        for r in rows:
            r["phone_masked"] = mask_phone(r.pop("phone") or "")
        return json_response({"return_id": str(rid), "messages": rows})


SPEC: ServiceSpec[Any] = ServiceSpec(
    name="notify",
    folder=Path(__file__).parent,
    description="SMS follow-ups: one message per return and step, in the customer's language, never at "
    "night, never after STOP; reminders on a PostgreSQL schedule; inbound and delivery webhooks.",
    consumers=[ConsumerSpec("lifecycle", CONSUMED, lifecycle_handler)],
    routes=routes,
    on_start=[_start],
    on_stop=[_stop],
    background=[send_sms],
)


def app() -> FastAPI:
    return create_app(SPEC)
