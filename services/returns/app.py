"""returns service wiring: platform webhooks in, return-requested events out, and the timeline
built from every lifecycle topic."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import ValidationError

from contracts.catalog import CATALOG
from contracts.events import ReturnCancelled, TrackingRegistered
from returnflow.batching import GroupCommitter
from returnflow.consumer import Delivery, Handler
from returnflow.http import (
    HttpProblem,
    correlation_id,
    error,
    field_errors,
    json_body,
    json_response,
    parse_json,
    required_header,
    signed_body,
)
from returnflow.logging import mask_phone
from returnflow.outbox import enqueue
from returnflow.service import ConsumerSpec, Runtime, ServiceSpec, create_app
from returnflow.signing import (
    DELIVERY_HEADER,
    SHOPIFY_SHOP_HEADER,
    SHOPIFY_WEBHOOK_ID_HEADER,
)
from services.returns import analytics, storage
from services.returns.domain import (
    ReturnEventWebhook,
    ReturnWebhook,
    can_cancel,
    map_shopify,
    parse_return_id,
    status_after,
)

# Every lifecycle topic the catalog lists us as a consumer of (see contracts.catalog._with_timeline).
TIMELINE_TOPICS = [t.name for t in CATALOG if "returns" in t.consumers]


def timeline_handler(rt: Runtime) -> Handler:
    async def handle(conn: Any, batch: list[Delivery]) -> None:
        entries = []
        updates: dict[Any, tuple[str, int]] = {}
        for d in batch:
            e = d.event
            assert e is not None
            data = e.model_dump(mode="json")
            entries.append((e.return_id, str(e.event_id), e.occurred_at, e.type, data))
            st = status_after(e.type, data)
            if st and (e.return_id not in updates or updates[e.return_id][1] < st[1]):
                updates[e.return_id] = st
        await storage.add_timeline_raw(conn, entries)
        await storage.advance_status(conn, updates)

    return handle


async def _start_intake(rt: Runtime) -> None:
    rt.state["intake"] = GroupCommitter(
        rt.pool,
        storage.accept_returns,
        max_size=rt.settings.intake_batch_max,
        max_wait_s=rt.settings.intake_batch_wait_ms / 1000,
    )


async def _stop_intake(rt: Runtime) -> None:
    await rt.state["intake"].close()


def _timeline_url(request: Request, return_id: Any) -> str:
    return f"/v1/returns/{return_id}/timeline"


def routes(app: FastAPI, rt: Runtime) -> None:
    settings = rt.settings

    async def accept(request: Request, source: str, delivery_id: str, body: ReturnWebhook) -> Response:
        result = await rt.state["intake"].submit(
            storage.Intake(source, delivery_id, source, body, correlation_id(request))
        )
        return json_response(
            {
                "return_id": str(result.return_id),
                "status": result.status,
                "timeline_url": _timeline_url(request, result.return_id),
                "duplicate": not result.created,
            },
            202 if result.created else 200,
        )

    @app.post(
        "/v1/webhooks/generic/returns",
        status_code=202,
        tags=["webhooks"],
        summary="A platform's return request (signed, X-Returnflow-Signature)",
        openapi_extra=json_body(ReturnWebhook),
    )
    async def generic_return(request: Request) -> Response:
        raw = await signed_body(request, settings, "generic")
        delivery_id = required_header(request, DELIVERY_HEADER)
        return await accept(request, "generic", delivery_id, parse_json(ReturnWebhook, raw))

    @app.post(
        "/v1/webhooks/shopify/returns",
        status_code=202,
        tags=["webhooks"],
        summary="Shopify returns/request webhook (X-Shopify-Hmac-SHA256)",
    )
    async def shopify_return(request: Request) -> Response:
        raw = await signed_body(request, settings, "shopify", scheme="shopify")
        delivery_id = required_header(request, SHOPIFY_WEBHOOK_ID_HEADER)
        try:
            payload = orjson.loads(raw)
            if not isinstance(payload, dict):
                raise ValueError("body must be a JSON object")
            data = map_shopify(payload, request.headers.get(SHOPIFY_SHOP_HEADER))
        except (orjson.JSONDecodeError, ValueError) as exc:
            raise HttpProblem(422, "body is not a Shopify return", [{"field": "body", "message": str(exc)}]) from None
        try:
            body = ReturnWebhook.model_validate(data)
        except ValidationError as exc:
            raise HttpProblem(422, "validation failed", field_errors(exc)) from None
        return await accept(request, "shopify", delivery_id, body)

    @app.post(
        "/v1/webhooks/{platform}/returns/{platform_return_id}/events",
        status_code=202,
        tags=["webhooks"],
        summary="Tracking number registered, or return cancelled by the customer",
        openapi_extra=json_body(ReturnEventWebhook),
    )
    async def return_event(platform: str, platform_return_id: str, request: Request) -> Response:
        if platform not in ("generic", "shopify"):
            return error(404, f"unknown platform {platform!r}")
        if platform == "shopify":
            raw = await signed_body(request, settings, "shopify", scheme="shopify")
            delivery_id = required_header(request, SHOPIFY_WEBHOOK_ID_HEADER)
        else:
            raw = await signed_body(request, settings, "generic")
            delivery_id = required_header(request, DELIVERY_HEADER)
        body = parse_json(ReturnEventWebhook, raw)
        source = f"{platform}-events"
        async with rt.pool.acquire() as conn, conn.transaction():
            ret = await storage.find_by_platform_id(conn, body.shop_id, platform_return_id, for_update=True)
            if ret is None:
                return error(404, f"no return {platform_return_id!r} for shop {body.shop_id!r}")
            if await storage.find_delivery(conn, source, delivery_id):
                return json_response({"return_id": str(ret["id"]), "status": ret["status"], "duplicate": True})
            now = datetime.now(UTC)
            event: TrackingRegistered | ReturnCancelled
            if body.type == "tracking_registered":
                assert body.tracking_no is not None
                event = TrackingRegistered(
                    occurred_at=now,
                    return_id=ret["id"],
                    correlation_id=correlation_id(request),
                    tracking_no=body.tracking_no,
                    carrier=body.carrier,
                )
                await conn.execute(
                    "UPDATE returns SET tracking_no = $2, updated_at = now() WHERE id = $1", ret["id"], body.tracking_no
                )
            else:
                if ret["status"] == "cancelled":
                    return json_response({"return_id": str(ret["id"]), "status": "cancelled", "duplicate": True})
                if not can_cancel(ret["status_rank"]):
                    return error(409, f"return is already {ret['status']}; it can no longer be cancelled")
                event = ReturnCancelled(
                    occurred_at=now, return_id=ret["id"], correlation_id=correlation_id(request), reason=body.reason
                )
            await enqueue(conn, [event])
            await storage.add_timeline(conn, [event])
            st = status_after(event.type, {})
            if st:
                await storage.advance_status(conn, {ret["id"]: st})
            await storage.record_delivery(conn, source, delivery_id, ret["id"])
        return json_response({"return_id": str(ret["id"]), "event": event.type, "duplicate": False}, 202)

    @app.get("/v1/returns/{return_id}", tags=["returns"], summary="A return and its status")
    async def get_return(return_id: str, request: Request) -> Response:
        rid = parse_return_id(return_id)
        found = await storage.get_return(rt.pool, rid) if rid else None
        if found is None:
            return error(404, f"unknown return {return_id!r}")
        found["customer"] = {**found["customer"], "phone": mask_phone(found["customer"].get("phone", ""))}
        found.pop("status_rank", None)
        found["timeline_url"] = _timeline_url(request, rid)
        return json_response(found)

    @app.get("/v1/returns/{return_id}/timeline", tags=["returns"], summary="What happened to a return, in order")
    async def get_timeline(return_id: str) -> Response:
        rid = parse_return_id(return_id)
        found = await rt.pool.fetchrow("SELECT status FROM returns WHERE id = $1", rid) if rid else None
        if found is None:
            return error(404, f"unknown return {return_id!r}")
        entries = await storage.get_timeline(rt.pool, rid)  # type: ignore[arg-type]
        return json_response({"return_id": str(rid), "status": found["status"], "entries": entries})


def analytics_routes(app: FastAPI, rt: Runtime) -> None:
    @app.get(
        "/v1/analytics/{report}",
        tags=["analytics"],
        summary=f"After-sales reports: {', '.join(analytics.REPORTS)} (JSON, or CSV with ?format=csv)",
    )
    async def get_report(report: str, format: str = "json", months: int = 6) -> Response:
        if report not in analytics.REPORTS:
            return error(404, f"unknown report {report!r}; one of {', '.join(analytics.REPORTS)}")
        if format not in ("json", "csv"):
            return error(422, "format must be json or csv", fields=[{"field": "format", "message": "json or csv"}])
        if not 1 <= months <= 36:
            return error(422, "months must be 1..36", fields=[{"field": "months", "message": "1..36"}])
        body = await analytics.report(rt.pool, report, months)
        if format == "csv":
            return Response(
                analytics.to_csv(body["rows"]),
                media_type="text/csv",
                headers={"content-disposition": f'attachment; filename="{report}.csv"'},
            )
        return json_response(body)


def all_routes(app: FastAPI, rt: Runtime) -> None:
    routes(app, rt)
    analytics_routes(app, rt)


SPEC: ServiceSpec[Any] = ServiceSpec(
    name="returns",
    folder=Path(__file__).parent,
    description="Platform webhooks in; return events out; each return's status and timeline.",
    consumers=[ConsumerSpec("timeline", TIMELINE_TOPICS, timeline_handler)],
    routes=all_routes,
    on_start=[_start_intake],
    on_stop=[_stop_intake],
)


def app() -> FastAPI:
    return create_app(SPEC)
