"""HTTP of the returns service: platform webhooks in (signed), a return and its timeline out, and the
after-sales reports. Each route parses, calls a handler or a view, and maps the outcome to HTTP."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import ValidationError

from returnflow.http import (
    HttpProblem,
    context_dependency,
    correlation_id,
    error,
    field_errors,
    json_body,
    json_response,
    parse_json,
    required_header,
    signed_body,
)
from returnflow.signing import DELIVERY_HEADER, SHOPIFY_SHOP_HEADER, SHOPIFY_WEBHOOK_ID_HEADER
from services.returns import analytics, handlers, views
from services.returns.handlers import AlreadyDone, Recorded, ReturnEvent, ReturnsContext, UnknownReturn
from services.returns.rules import Intake, TooLateToCancel
from services.returns.schemas import ReturnEventWebhook, ReturnWebhook, map_shopify

Ctx = Annotated[ReturnsContext, Depends(context_dependency(ReturnsContext))]

router = APIRouter()

# platform -> (signature scheme, the header carrying the platform's delivery id)
PLATFORMS: dict[str, tuple[str, str]] = {
    "generic": ("returnflow", DELIVERY_HEADER),
    "shopify": ("shopify", SHOPIFY_WEBHOOK_ID_HEADER),
}


async def signed_delivery(request: Request, ctx: ReturnsContext, platform: str) -> tuple[bytes, str]:
    """A platform's webhook: its verified raw body and its delivery id."""
    scheme, delivery_header = PLATFORMS[platform]
    raw = await signed_body(request, ctx.runtime_settings, platform, scheme=scheme)
    return raw, required_header(request, delivery_header)


def timeline_url(return_id: UUID) -> str:
    return f"/v1/returns/{return_id}/timeline"


async def accept(
    ctx: ReturnsContext, request: Request, platform: str, delivery_id: str, body: ReturnWebhook
) -> Response:
    result = await ctx.intake.submit(Intake(platform, delivery_id, platform, body, correlation_id(request)))
    return json_response(
        {
            "return_id": str(result.return_id),
            "status": result.status,
            "timeline_url": timeline_url(result.return_id),
            "duplicate": not result.created,
        },
        202 if result.created else 200,
    )


@router.post(
    "/v1/webhooks/generic/returns",
    status_code=202,
    tags=["webhooks"],
    summary="A platform's return request (signed, X-Returnflow-Signature)",
    openapi_extra=json_body(ReturnWebhook),
)
async def generic_return(request: Request, ctx: Ctx) -> Response:
    raw, delivery_id = await signed_delivery(request, ctx, "generic")
    return await accept(ctx, request, "generic", delivery_id, parse_json(ReturnWebhook, raw))


@router.post(
    "/v1/webhooks/shopify/returns",
    status_code=202,
    tags=["webhooks"],
    summary="Shopify returns/request webhook (X-Shopify-Hmac-SHA256)",
)
async def shopify_return(request: Request, ctx: Ctx) -> Response:
    raw, delivery_id = await signed_delivery(request, ctx, "shopify")
    body = shopify_body(raw, request.headers.get(SHOPIFY_SHOP_HEADER))
    return await accept(ctx, request, "shopify", delivery_id, body)


def shopify_body(raw: bytes, shop_domain: str | None) -> ReturnWebhook:
    try:
        payload = orjson.loads(raw)
        if not isinstance(payload, dict):
            raise ValueError("body must be a JSON object")
        data = map_shopify(payload, shop_domain)
    except (orjson.JSONDecodeError, ValueError) as exc:
        raise HttpProblem(422, "body is not a Shopify return", [{"field": "body", "message": str(exc)}]) from None
    try:
        return ReturnWebhook.model_validate(data)
    except ValidationError as exc:
        raise HttpProblem(422, "validation failed", field_errors(exc)) from None


@router.post(
    "/v1/webhooks/{platform}/returns/{platform_return_id}/events",
    status_code=202,
    tags=["webhooks"],
    summary="Tracking number registered, or return cancelled by the customer",
    openapi_extra=json_body(ReturnEventWebhook),
)
async def return_event(platform: str, platform_return_id: str, request: Request, ctx: Ctx) -> Response:
    if platform not in PLATFORMS:
        return error(404, f"unknown platform {platform!r}")
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


@router.get("/v1/returns/{return_id}", tags=["returns"], summary="A return and its status")
async def get_return(return_id: UUID, ctx: Ctx) -> Response:
    found = await views.return_view(ctx.pool, return_id)
    if found is None:
        return error(404, f"unknown return {str(return_id)!r}")
    return json_response({**found, "timeline_url": timeline_url(return_id)})


@router.get("/v1/returns/{return_id}/timeline", tags=["returns"], summary="What happened to a return, in order")
async def get_timeline(return_id: UUID, ctx: Ctx) -> Response:
    found = await views.timeline_view(ctx.pool, return_id)
    if found is None:
        return error(404, f"unknown return {str(return_id)!r}")
    return json_response(found)


@router.get(
    "/v1/analytics/{report}",
    tags=["analytics"],
    summary=f"After-sales reports: {', '.join(analytics.REPORTS)} (JSON, or CSV with ?format=csv)",
)
async def get_report(report: str, ctx: Ctx, format: str = "json", months: int = 6) -> Response:
    if report not in analytics.REPORTS:
        return error(404, f"unknown report {report!r}; one of {', '.join(analytics.REPORTS)}")
    if format not in ("json", "csv"):
        return error(422, "format must be json or csv", fields=[{"field": "format", "message": "json or csv"}])
    if not 1 <= months <= 36:
        return error(422, "months must be 1..36", fields=[{"field": "months", "message": "1..36"}])
    body = await analytics.report(ctx.pool, report, months)
    if format == "csv":
        return Response(
            analytics.to_csv(body["rows"]),
            media_type="text/csv",
            headers={"content-disposition": f'attachment; filename="{report}.csv"'},
        )
    return json_response(body)
