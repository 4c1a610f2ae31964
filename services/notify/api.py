"""notify's HTTP API: the SMS provider's inbound-SMS and delivery-status webhooks (checked with the
provider's own signature scheme), and the SMS of a return."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal, TypeVar
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from returnflow.http import BodyTooLarge, HttpProblem, Reader, context_dependency, json_response, read_body, reader
from returnflow.openapi import problems
from returnflow.paging import decode_cursor
from returnflow.signing import SignatureError
from services.notify import handlers, views, webhook_repository
from services.notify.handlers import NotifyContext
from services.notify.providers import BadWebhook, SmsProvider, WebhookRequest
from services.notify.responses import (
    INBOUND_EXAMPLE,
    PROVIDER_ANSWER,
    STATUS_EXAMPLE,
    Attention,
    SmsOfReturn,
    WebhookDeliveries,
    webhook_body,
)

T = TypeVar("T")

router = APIRouter()
Ctx = Annotated[NotifyContext, Depends(context_dependency(NotifyContext))]
SmsReader = Annotated[Reader, Depends(reader("ops", "agent"))]
WEBHOOK_ANSWERS = {
    **PROVIDER_ANSWER,
    **problems(401, 413, 422, s401="the provider's signature is missing or wrong", s422="not the provider's callback"),
}


def called_url(request: Request, public_base_url: str | None) -> str:
    """The URL the provider called (what Twilio signs): behind a proxy, the configured public base."""
    if not public_base_url:
        return str(request.url)
    url = public_base_url.rstrip("/") + request.url.path
    return url + ("?" + request.url.query if request.url.query else "")


async def provider_webhook(request: Request, ctx: NotifyContext, parse: Callable[[WebhookRequest], T], what: str) -> T:
    """Read a provider's callback and let the provider check its signature and parse it."""
    limit = ctx.runtime.webhook_max_body_bytes
    try:
        raw = await read_body(request, limit)
    except BodyTooLarge:
        raise HttpProblem(413, f"body larger than {limit} bytes") from None
    req = WebhookRequest(
        url=called_url(request, ctx.runtime.public_base_url),
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


def provider_answer(provider: SmsProvider, kind: str) -> Response:
    """What the provider expects back (Twilio: empty TwiML; Aliyun: its JSON acknowledgement)."""
    ans = provider.answer(kind)
    return Response(ans.body, status_code=ans.status, media_type=ans.media_type)


@router.post(
    "/v1/webhooks/sms/inbound",
    tags=["webhooks"],
    summary="A customer's reply (STOP / 退订 / TD ... opt out, START opts back in); provider-signed",
    response_class=Response,
    responses=WEBHOOK_ANSWERS,
    openapi_extra=webhook_body(INBOUND_EXAMPLE),
)
async def inbound(request: Request, ctx: Ctx) -> Response:
    replies = await provider_webhook(request, ctx, ctx.provider.parse_inbound, "an inbound SMS")
    await handlers.record_replies(ctx, replies)
    return provider_answer(ctx.provider, "inbound")


@router.post(
    "/v1/webhooks/sms/status",
    tags=["webhooks"],
    summary="Delivery receipts; provider-signed",
    response_class=Response,
    responses=WEBHOOK_ANSWERS,
    openapi_extra=webhook_body(STATUS_EXAMPLE),
)
async def status(request: Request, ctx: Ctx) -> Response:
    receipts = await provider_webhook(request, ctx, ctx.provider.parse_status, "a delivery receipt")
    await handlers.record_receipts(ctx, receipts)
    return provider_answer(ctx.provider, "status")


@router.get(
    "/v1/returns/{return_id}/sms",
    tags=["sms"],
    summary="The SMS of a return: sent, waiting, not sent and why (reader token: ops, agent)",
    response_model=SmsOfReturn,
    responses=problems(401, 403),
)
async def list_sms(return_id: UUID, ctx: Ctx, _: SmsReader) -> Response:
    return json_response(await views.sms_of_return(ctx.pool, return_id))


@router.get(
    "/v1/notify/attention",
    tags=["sms"],
    summary="SMS failures and opt-outs on open returns, for a person (reader token: ops, agent)",
    description="Messages the provider refused or could not deliver, and customers whose number opted out, on "
    "returns not cancelled: oldest first, a page of `limit` with `next_cursor`, and counts per kind over the "
    "whole filter. An item leaves when its return is cancelled, or the number opts in again.",
    response_model=Attention,
    responses=problems(401, 403, 422),
)
async def attention(
    ctx: Ctx,
    _: SmsReader,
    shop: Annotated[str | None, Query(min_length=1, max_length=128, description="shop id")] = None,
    older_than: Annotated[int | None, Query(ge=0, le=10**9, description="seconds waiting, at least")] = None,
    cursor: Annotated[str | None, Query(max_length=512, description="`next_cursor` of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    after = decode_cursor(cursor)
    return json_response(await views.attention(ctx.pool, shop, older_than, after, limit))


WebhookReader = Annotated[Reader, Depends(reader("ops"))]


@router.get(
    "/v1/notify/shops/{shop_id}/webhooks/deliveries",
    tags=["webhooks"],
    summary="A shop's merchant webhook deliveries: status, attempts, last answer and error (reader token: ops)",
    description="Newest first, a page of `limit` with `next_cursor`; `status` and `type` narrow the list. A "
    "pending delivery shows when it is attempted next; a failed one why it was given up.",
    response_model=WebhookDeliveries,
    responses=problems(401, 403, 422),
)
async def webhook_deliveries(
    ctx: Ctx,
    _: WebhookReader,
    shop_id: Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")],
    status: Annotated[Literal["pending", "sending", "delivered", "failed"] | None, Query()] = None,
    event_type: Annotated[
        str | None, Query(alias="type", min_length=1, max_length=64, description="merchant event type")
    ] = None,
    cursor: Annotated[str | None, Query(max_length=512, description="`next_cursor` of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Response:
    after = decode_cursor(cursor)
    return json_response(await webhook_repository.deliveries(ctx.pool, shop_id, status, event_type, after, limit))
