"""HTTP of the returns service: platform webhooks in (signed), a return and its timeline out, and the
after-sales reports. Each route parses, calls a handler or a view, and maps the outcome to HTTP."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError

from returnflow.http import (
    HttpProblem,
    Reader,
    context_dependency,
    correlation_id,
    error,
    field_errors,
    json_body,
    json_response,
    parse_json,
    reader,
    refuse_nul_in_json,
    required_header,
    signed_body,
)
from returnflow.openapi import delivery_header, problems, signed
from returnflow.paging import decode_cursor
from returnflow.signing import (
    DELIVERY_HEADER,
    SHOPIFY_SHOP_HEADER,
    SHOPIFY_TOPIC_HEADER,
    SHOPIFY_WEBHOOK_ID_HEADER,
    SIGNATURE_HEADER,
    WEBHOOK_ID_HEADER,
    WEBHOOK_SIGNATURE_HEADER,
)
from services.returns import analytics, handlers, views
from services.returns.handlers import (
    AlreadyDone,
    LinkRevoked,
    Recorded,
    ReturnEvent,
    ReturnsContext,
    ShopifyReturnEvent,
    UnknownReturn,
)
from services.returns.responses import (
    Accepted,
    EventAlreadyRecorded,
    EventRecorded,
    FoundReturns,
    LinkRevocation,
    Report,
    ReturnView,
    Timeline,
)
from services.returns.rules import (
    RETURN_STATUSES,
    SHOPIFY_TOPICS,
    Intake,
    TooLateToCancel,
    return_search,
    with_shop_defaults,
)
from services.returns.schemas import (
    ReturnEventWebhook,
    ReturnWebhook,
    ShopifyOrder,
    map_shopify,
    obj,
    shopify_return_ref,
)
from services.returns.shopify import AdminUnavailable, OrderNotFound

Ctx = Annotated[ReturnsContext, Depends(context_dependency(ReturnsContext))]
# Who reads what: a return and its timeline (ops, agents, auditors); the after-sales reports (ops, agents).
ReturnReader = Annotated[Reader, Depends(reader("ops", "agent", "auditor"))]
ReportReader = Annotated[Reader, Depends(reader("ops", "agent"))]
# Who may revoke a customer's link (a forwarded text reported to support): ops and agents, by name.
LinkRevoker = Annotated[Reader, Depends(reader("ops", "agent"))]
READ_ERRORS = problems(401, 403, 404)

router = APIRouter()

# platform -> (signature scheme, the header carrying the platform's delivery id)
PLATFORMS: dict[str, tuple[str, str]] = {
    "generic": ("returnflow", DELIVERY_HEADER),
    "shopify": ("shopify", SHOPIFY_WEBHOOK_ID_HEADER),
}


def scheme_of(request: Request, platform: str) -> tuple[str, str]:
    """The signature scheme of a delivery and its delivery-id header. The generic platform also takes Standard
    Webhooks (webhook-id, webhook-timestamp, webhook-signature), when a delivery comes with those headers and
    without X-Returnflow-Signature: same secrets, in whsec_ form or raw."""
    if platform == "generic" and SIGNATURE_HEADER not in request.headers:
        if WEBHOOK_SIGNATURE_HEADER in request.headers or WEBHOOK_ID_HEADER in request.headers:
            return "standard", WEBHOOK_ID_HEADER
    return PLATFORMS[platform]


async def signed_delivery(request: Request, ctx: ReturnsContext, platform: str) -> tuple[bytes, str]:
    """A platform's webhook: its verified raw body and its delivery id."""
    scheme, delivery_header = scheme_of(request, platform)
    raw = await signed_body(request, ctx.runtime_settings, platform, scheme=scheme)
    return raw, required_header(request, delivery_header)


def timeline_url(return_id: UUID) -> str:
    return f"/v1/returns/{return_id}/timeline"


async def accept(
    ctx: ReturnsContext, request: Request, platform: str, delivery_id: str, body: ReturnWebhook
) -> Response:
    body = with_shop_defaults(body, ctx.shops.get(body.shop_id))
    result = await ctx.intake.submit(Intake(platform, delivery_id, platform, body, correlation_id(request)))
    return accepted_answer(result.return_id, result.status, result.created)


def accepted_answer(return_id: UUID, status: str, created: bool) -> Response:
    return json_response(
        {
            "return_id": str(return_id),
            "status": status,
            "timeline_url": timeline_url(return_id),
            "duplicate": not created,
        },
        202 if created else 200,
    )


RETURN_EXAMPLE: dict[str, Any] = {
    "platform_return_id": "pr-1001",
    "order_id": "order-77",
    "shop_id": "demo-shop",
    "kind": "return_and_refund",
    "customer": {"id": "c-1", "phone": "+8613812345678", "locale": "zh-CN", "timezone": "Asia/Shanghai"},
    "currency": "CNY",
    "paid_total": 5000,
    "lines": [{"sku": "SKU-1", "qty": 1, "unit_price": 5000, "reason": "damaged"}],
    "requested_by": {"type": "customer"},
    "requested_at": "2026-11-20T10:00:00+08:00",
}
# Shopify's returns/request payload as its webhook reference documents it: the return, its order (ids
# only) and the returned lines (ids, quantity, reason); prices and the customer are read from the order.
SHOPIFY_EXAMPLE: dict[str, Any] = {
    "id": 9001,
    "admin_graphql_api_id": "gid://shopify/Return/9001",
    "status": "requested",
    "order": {"id": 450789469, "admin_graphql_api_id": "gid://shopify/Order/450789469"},
    "total_return_line_items": 1,
    "name": "#1001-R1",
    "return_line_items": [
        {
            "id": 61,
            "admin_graphql_api_id": "gid://shopify/ReturnLineItem/61",
            "fulfillment_line_item": {
                "id": 71,
                "admin_graphql_api_id": "gid://shopify/FulfillmentLineItem/71",
                "line_item": {"id": 466157049, "admin_graphql_api_id": "gid://shopify/LineItem/466157049"},
            },
            "quantity": 1,
            "return_reason": "size_too_small",
            "return_reason_note": "",
            "customer_note": "A size up, please",
        }
    ],
    "return_shipping_fees": [],
    "exchange_line_items": [],
    "total_exchange_line_items": 0,
}
SHOPIFY_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "description": "Shopify's returns/request, returns/decline or returns/close payload",
                },
                "example": SHOPIFY_EXAMPLE,
            }
        },
    }
}
EVENT_EXAMPLE = {"shop_id": "demo-shop", "type": "tracking_registered", "tracking_no": "SF1234567890", "carrier": "sf"}
WEBHOOK_ERRORS = problems(
    400,
    401,
    413,
    415,
    422,
    s400="the delivery id header is missing",
    s401="the signature is missing, stale or wrong",
    s415="the body is not JSON",
)
GENERIC_SIGNED: dict[str, Any] = {
    "security": [{"returnflowSignature": []}, {"standardWebhooks": []}],
    "parameters": [
        {**p, "required": False, "description": "the sender's delivery id (with X-Returnflow-Signature)"}
        for p in delivery_header()["parameters"]
    ]
    + [
        {"name": name, "in": "header", "required": False, "description": what, "schema": {"type": "string"}}
        for name, what in (
            (WEBHOOK_ID_HEADER, "Standard Webhooks: the delivery id"),
            ("webhook-timestamp", "Standard Webhooks: unix seconds when signed"),
        )
    ],
}
ACCEPTED: dict[int | str, dict[str, Any]] = {
    202: {"model": Accepted, "description": "accepted"},
    200: {"model": Accepted, "description": "the same delivery again"},
}


@router.post(
    "/v1/webhooks/generic/returns",
    status_code=202,
    tags=["webhooks"],
    summary="A platform's return request (signed: X-Returnflow-Signature, or Standard Webhooks)",
    description="Signed with X-Returnflow-Signature and identified by X-Returnflow-Delivery, or signed the "
    "Standard Webhooks way (webhook-id, webhook-timestamp, webhook-signature: the webhook-id is the delivery id).",
    response_model=Accepted,
    responses={**ACCEPTED, **WEBHOOK_ERRORS},
    openapi_extra=json_body(ReturnWebhook, RETURN_EXAMPLE) | GENERIC_SIGNED,
)
async def generic_return(request: Request, ctx: Ctx) -> Response:
    raw, delivery_id = await signed_delivery(request, ctx, "generic")
    return await accept(ctx, request, "generic", delivery_id, parse_json(ReturnWebhook, raw))


@router.post(
    "/v1/webhooks/shopify/returns",
    status_code=202,
    tags=["webhooks"],
    summary="Shopify's returns/request, returns/decline and returns/close webhooks (X-Shopify-Hmac-SHA256)",
    description="X-Shopify-Topic says what happened: `returns/request` creates the return once its order was "
    "read through the shop's Admin API (503 when Shopify's API cannot answer in time: nothing was accepted, "
    "Shopify delivers it again); `returns/decline` and `returns/close` cancel it (by the shop) while that "
    "still makes sense. X-Shopify-Shop-Domain names the shop in the shops file (its webhook secret and "
    "access token); a domain not in the file is checked with the `shopify` webhook secrets and may only "
    "decline or close.",
    response_model=Accepted,
    responses={
        **ACCEPTED,
        **WEBHOOK_ERRORS,
        **problems(
            404,
            503,
            s404="decline/close for a return not requested here (yet): Shopify delivers it again",
            s503="the shop's Admin API did not answer in time",
        ),
    },
    openapi_extra=SHOPIFY_BODY
    | signed("shopifyHmac")
    | {
        "parameters": [
            *delivery_header(SHOPIFY_WEBHOOK_ID_HEADER, "Shopify's webhook id")["parameters"],
            {
                "name": SHOPIFY_TOPIC_HEADER,
                "in": "header",
                "required": True,
                "description": "returns/request, returns/decline or returns/close",
                "schema": {"type": "string", "enum": list(SHOPIFY_TOPICS)},
            },
            {
                "name": SHOPIFY_SHOP_HEADER,
                "in": "header",
                "required": True,
                "description": "the shop's myshopify.com domain (matched against the shops file)",
                "schema": {"type": "string"},
            },
        ]
    },
)
async def shopify_return(request: Request, ctx: Ctx) -> Response:
    domain = request.headers.get(SHOPIFY_SHOP_HEADER, "").strip().lower()
    found = ctx.shops.by_shopify_domain(domain) if domain else None
    platform = found[1].platform.shopify if found is not None else None
    secrets = [platform.webhook_secret.get_secret_value().encode()] if platform and platform.webhook_secret else None
    raw = await signed_body(request, ctx.runtime_settings, "shopify", scheme="shopify", secrets=secrets)
    topic = shopify_topic(request)
    delivery_id = required_header(request, SHOPIFY_WEBHOOK_ID_HEADER)
    if not domain:
        raise HttpProblem(400, f"missing {SHOPIFY_SHOP_HEADER} header", [header_error(SHOPIFY_SHOP_HEADER, "required")])
    payload = shopify_payload(raw)
    try:
        ref = shopify_return_ref(payload, topic)
    except ValueError as exc:
        raise HttpProblem(422, "body is not a Shopify return", [value_error(exc)]) from None
    shop_id = found[0] if found is not None else domain
    if topic != "returns/request":
        return await shopify_lifecycle(ctx, request, topic, delivery_id, shop_id, ref.return_id, payload)
    if found is None or platform is None:
        raise HttpProblem(
            422,
            f"shop {domain} is not in the shops file: returns/request needs its Admin API access token to read "
            "the order",
            [header_error(SHOPIFY_SHOP_HEADER, "no shop with this platform.shopify.domain in the shops file")],
        )
    rid = await handlers.already_accepted(ctx, "shopify", delivery_id, (shop_id, ref.return_id))
    if rid is not None:
        return accepted_answer(rid, "requested", created=False)
    assert ref.order_gid is not None  # shopify_return_ref requires it for returns/request
    try:
        order = await ctx.shopify.order(platform, ref.order_gid)
    except AdminUnavailable as exc:
        raise HttpProblem(503, str(exc), headers={"Retry-After": str(exc.retry_after_s)}) from None
    except OrderNotFound as exc:
        raise HttpProblem(422, "the return's order is unknown", [{"field": "order.id", "message": str(exc)}]) from None
    shop = found[1]
    body = shopify_body(payload, order, shop_id, shop.locale, shop.timezone)
    return await accept(ctx, request, "shopify", delivery_id, body)


def shopify_topic(request: Request) -> str:
    topic = request.headers.get(SHOPIFY_TOPIC_HEADER, "").strip()
    if topic not in SHOPIFY_TOPICS:
        known = ", ".join(SHOPIFY_TOPICS)
        not_this = f", not {topic!r}" if topic else ""
        raise HttpProblem(
            400,
            f"{SHOPIFY_TOPIC_HEADER} must be one of {known}{not_this} (subscribe this URL to those topics only)",
            [header_error(SHOPIFY_TOPIC_HEADER, f"expected one of {known}")],
        )
    return topic


def header_error(name: str, message: str) -> dict[str, str]:
    return {"field": name, "message": message}


def value_error(exc: ValueError) -> dict[str, str]:
    """A mapping error `field: message` as a problem field."""
    field, _, message = str(exc).partition(": ")
    return {"field": field, "message": message} if message else {"field": "body", "message": str(exc)}


def shopify_payload(raw: bytes) -> dict[str, Any]:
    refuse_nul_in_json(raw)
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise HttpProblem(422, "body is not JSON", [{"field": "body", "message": str(exc)}]) from None
    if not isinstance(payload, dict):
        raise HttpProblem(422, "body is not a Shopify return", [{"field": "body", "message": "not a JSON object"}])
    return payload


def shopify_body(
    payload: dict[str, Any], order: ShopifyOrder, shop_id: str, locale: str | None, timezone: str | None
) -> ReturnWebhook:
    try:
        data = map_shopify(payload, order, shop_id, locale, timezone)
    except ValueError as exc:
        raise HttpProblem(422, "body is not a Shopify return", [value_error(exc)]) from None
    try:
        return ReturnWebhook.model_validate(data)
    except ValidationError as exc:
        raise HttpProblem(422, "validation failed", field_errors(exc)) from None


async def shopify_lifecycle(
    ctx: ReturnsContext,
    request: Request,
    topic: str,
    delivery_id: str,
    shop_id: str,
    platform_return_id: str,
    payload: dict[str, Any],
) -> Response:
    cmd = ShopifyReturnEvent(
        delivery_id, shop_id, platform_return_id, topic, shopify_reason(topic, payload), correlation_id(request)
    )
    match await handlers.record_shopify_event(ctx, cmd):
        case UnknownReturn():
            return error(404, f"no return {platform_return_id!r} for shop {shop_id!r} (yet)")
        case AlreadyDone(return_id, status):
            return json_response({"return_id": str(return_id), "status": status, "duplicate": True})
        case Recorded(return_id, event_type):
            return json_response({"return_id": str(return_id), "event": event_type, "duplicate": False}, 202)
    raise AssertionError("unreachable")


def shopify_reason(topic: str, payload: dict[str, Any]) -> str:
    """The cancellation's reason as the timeline shows it: Shopify's decline reason and note."""
    if topic == "returns/close":
        return "closed in Shopify"
    decline = obj(payload.get("decline"))
    why = " — ".join(str(x) for x in (decline.get("reason"), decline.get("note")) if x)
    return "declined in Shopify" + (f": {why}" if why else "")[:400]


@router.post(
    "/v1/webhooks/{platform}/returns/{platform_return_id}/events",
    status_code=202,
    tags=["webhooks"],
    summary="Tracking number registered, or return cancelled by the customer",
    description="Signed as the platform's return requests are: `generic` with X-Returnflow-Signature and "
    "X-Returnflow-Delivery (or Standard Webhooks), `shopify` with X-Shopify-Hmac-SHA256 and X-Shopify-Webhook-Id.",
    response_model=EventRecorded,
    responses={
        202: {"model": EventRecorded, "description": "recorded"},
        200: {"model": EventAlreadyRecorded, "description": "the same event again"},
        **WEBHOOK_ERRORS,
        **problems(404, 409, s404="unknown return", s409="too late to cancel"),
    },
    openapi_extra=json_body(ReturnEventWebhook, EVENT_EXAMPLE)
    | {"security": [{"returnflowSignature": []}, {"standardWebhooks": []}, {"shopifyHmac": []}]}
    | delivery_header(DELIVERY_HEADER, "the delivery id (X-Shopify-Webhook-Id for shopify)"),
)
async def return_event(
    platform: Literal["generic", "shopify"], platform_return_id: str, request: Request, ctx: Ctx
) -> Response:
    raw, delivery_id = await signed_delivery(request, ctx, platform)
    body = parse_json(ReturnEventWebhook, raw)
    cmd = ReturnEvent(f"{platform}-events", delivery_id, platform_return_id, body, correlation_id(request))
    match await handlers.record_return_event(ctx, cmd):
        case UnknownReturn():
            return error(404, f"no return {platform_return_id!r} for shop {body.shop_id!r}")
        case AlreadyDone(return_id, status):
            return json_response({"return_id": str(return_id), "status": status, "duplicate": True})
        case TooLateToCancel(status):
            return error(409, f"return is already {status}; it can no longer be cancelled")
        case Recorded(return_id, event_type):
            return json_response({"return_id": str(return_id), "event": event_type, "duplicate": False}, 202)
    raise AssertionError("unreachable")


@router.get(
    "/v1/returns",
    tags=["returns"],
    summary="Search returns by order id, phone (exact, E.164), tracking number, status (reader token: ops, agent, "
    "auditor)",
    description="At least one filter (422 naming them otherwise); several narrow the search. Oldest first, a page "
    "of `limit` with `next_cursor`; `counts.total` over every page. The phone is normalised to E.164 first "
    "('+86 138-1234-5678' and '13812345678' find '+8613812345678') and shown masked.",
    response_model=FoundReturns,
    responses=problems(401, 403, 422),
)
async def search(
    ctx: Ctx,
    _: ReturnReader,
    order_id: Annotated[str | None, Query(max_length=128)] = None,
    phone: Annotated[str | None, Query(max_length=32)] = None,
    tracking_number: Annotated[str | None, Query(max_length=64)] = None,
    status: Literal[RETURN_STATUSES] | None = None,  # type: ignore[valid-type]
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Response:
    q = return_search(order_id, phone, tracking_number, status)
    if isinstance(q, list):
        raise HttpProblem(422, "validation failed", q)
    after = decode_cursor(cursor)
    if after is not None and not is_uuid(after[1]):
        raise HttpProblem(422, "validation failed", [{"field": "cursor", "message": "not a cursor this list gave"}])
    return json_response(await views.search_returns(ctx.pool, q, after, limit))


def is_uuid(text: str) -> bool:
    try:
        UUID(text)
    except ValueError:
        return False
    return True


@router.get(
    "/v1/returns/{return_id}",
    tags=["returns"],
    summary="A return and its status (Authorization: Bearer <reader token>: ops, agent, auditor)",
    response_model=ReturnView,
    responses=READ_ERRORS,
)
async def get_return(return_id: UUID, ctx: Ctx, _: ReturnReader) -> Response:
    found = await views.return_view(ctx.pool, return_id)
    if found is None:
        return error(404, f"unknown return {str(return_id)!r}")
    return json_response({**found, "timeline_url": timeline_url(return_id)})


@router.get(
    "/v1/returns/{return_id}/timeline",
    tags=["returns"],
    summary="What happened to a return, in order (reader token: ops, agent, auditor)",
    response_model=Timeline,
    responses=READ_ERRORS,
)
async def get_timeline(return_id: UUID, ctx: Ctx, _: ReturnReader) -> Response:
    found = await views.timeline_view(ctx.pool, return_id)
    if found is None:
        return error(404, f"unknown return {str(return_id)!r}")
    return json_response(found)


@router.post(
    "/v1/returns/{return_id}/links/revocation",
    tags=["returns"],
    summary="Revoke the return's customer link: it then answers 'no longer valid' (410); idempotent "
    "(bearer token: ops, agent; recorded as the revoker)",
    response_model=LinkRevocation,
    responses=READ_ERRORS,
)
async def revoke_link(return_id: UUID, ctx: Ctx, who: LinkRevoker) -> Response:
    match await handlers.revoke_customer_link(ctx, return_id, who.holder):
        case UnknownReturn():
            return error(404, f"unknown return {str(return_id)!r}")
        case LinkRevoked(rid, at, by, already):
            return json_response(
                {"return_id": str(rid), "revoked_at": at.isoformat(), "revoked_by": by, "already_revoked": already}
            )
    raise AssertionError("unreachable")


@router.get(
    "/v1/analytics/{report}",
    tags=["analytics"],
    summary=f"After-sales reports: {', '.join(analytics.REPORTS)} (JSON, or CSV with ?format=csv; reader token: "
    "ops, agent)",
    response_model=Report,
    responses={
        200: {"content": {"text/csv": {"schema": {"type": "string"}, "example": "month,reason,count,share\n"}}},
        **READ_ERRORS,
    },
)
async def get_report(
    report: analytics.ReportName,
    ctx: Ctx,
    _: ReportReader,
    format: Literal["json", "csv"] = "json",
    months: Annotated[int, Query(ge=1, le=36)] = 6,
) -> Response:
    body = await analytics.report(ctx.pool, report, months)
    if format == "csv":
        return Response(
            analytics.to_csv(body["rows"]),
            media_type="text/csv",
            headers={"content-disposition": f'attachment; filename="{report}.csv"'},
        )
    return json_response(body)
