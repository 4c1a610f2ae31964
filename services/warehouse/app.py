"""warehouse service (warehouse-confirm) wiring: expected parcels from return requests, signed carrier
scans (parked until their parcel is known), device-authenticated receipts."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from contracts.catalog import topic_of
from contracts.events import ReturnCancelled, ReturnRequested, TrackingRegistered
from returnflow.batching import GroupCommitter
from returnflow.consumer import Delivery, Handler
from returnflow.http import correlation_id, error, json_body, json_request, json_response, parse_json, signed_body
from returnflow.service import ConsumerSpec, Runtime, ServiceSpec, create_app
from services.warehouse import storage
from services.warehouse.domain import (
    CARRIER,
    ReceiptBody,
    ScanWebhook,
    receipt_fingerprint,
    scan_identity,
)

LIFECYCLE_TOPICS = [topic_of(ReturnRequested), topic_of(TrackingRegistered), topic_of(ReturnCancelled)]


def lifecycle_handler(rt: Runtime) -> Handler:
    async def handle(conn: Any, batch: list[Delivery]) -> None:
        await storage.apply_lifecycle(conn, [d.event for d in batch if d.event is not None])

    return handle


async def _start(rt: Runtime) -> None:
    s = rt.settings
    wait = s.warehouse_batch_wait_ms / 1000
    rt.state["scans"] = GroupCommitter(rt.pool, storage.accept_scans, max_size=s.warehouse_batch_max, max_wait_s=wait)
    rt.state["receipts"] = GroupCommitter(
        rt.pool, storage.accept_receipts, max_size=s.warehouse_batch_max, max_wait_s=wait
    )
    # sha256(token) -> (device id, warehouse id): a token is compared by digest, never logged.
    rt.state["devices"] = {
        hashlib.sha256(d.token.get_secret_value().encode()).digest(): (device_id, d.warehouse_id)
        for device_id, d in s.warehouse_devices.items()
    }


async def _stop(rt: Runtime) -> None:
    for name in ("scans", "receipts"):
        await rt.state[name].close()


def device_for(rt: Runtime, authorization: str | None) -> tuple[str, str] | None:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    digest = hashlib.sha256(token.strip().encode()).digest()
    for known, device in rt.state["devices"].items():
        if hmac.compare_digest(known, digest):
            return device
    return None


SCAN_EXAMPLE = {
    "tracking_no": "SF1234567890",
    "scan_code": "picked_up",
    "scanned_at": "2026-11-22T09:30:00+08:00",
    "location": "Hangzhou",
}
RECEIPT_EXAMPLE = {
    "receipt_id": "dock-1-000123",
    "tracking_no": "SF1234567890",
    "inspector_id": "insp-wang",
    "lines": [
        {"sku": "SERUM-30ML", "qty_received": 1, "condition": "as_described", "disposition": "destroy"},
        {"sku": "SCARF-01", "qty_received": 0, "condition": "missing"},
    ],
}


def routes(app: FastAPI, rt: Runtime) -> None:
    settings = rt.settings

    @app.post(
        "/v1/webhooks/carriers/{carrier}/scans",
        status_code=202,
        tags=["webhooks"],
        summary="A carrier scan (signed, X-Returnflow-Signature); parked until its parcel is known",
        openapi_extra=json_body(ScanWebhook, SCAN_EXAMPLE),
    )
    async def carrier_scan(carrier: str, request: Request) -> Response:
        if not CARRIER.match(carrier):
            return error(404, f"unknown carrier {carrier!r}", fields=[{"field": "carrier", "message": "a slug"}])
        body = parse_json(ScanWebhook, await signed_body(request, settings, "carriers"))
        scan_id = scan_identity(carrier, body)
        result = await rt.state["scans"].submit(storage.ScanIntake(carrier, scan_id, body, correlation_id(request)))
        return json_response(
            {
                "scan_id": result.scan_id,
                "status": "matched" if result.return_id else "parked",
                "return_id": str(result.return_id) if result.return_id else None,
                "duplicate": result.duplicate,
            },
            200 if result.duplicate else 202,
        )

    @app.post(
        "/v1/warehouse/receipts",
        status_code=201,
        tags=["warehouse"],
        summary="What came back, per SKU (Authorization: Bearer <device token>)",
        openapi_extra=json_body(ReceiptBody, RECEIPT_EXAMPLE),
    )
    async def receipt(request: Request) -> Response:
        device = device_for(rt, request.headers.get("authorization"))
        if device is None:
            return error(401, "a registered warehouse device's bearer token is required")
        body = await json_request(request, ReceiptBody, settings.webhook_max_body_bytes)
        result = await rt.state["receipts"].submit(
            storage.ReceiptIntake(device[0], device[1], body, receipt_fingerprint(body), correlation_id(request))
        )
        return json_response(result.body, result.status)

    @app.get("/v1/warehouse/parcels/{return_id}", tags=["warehouse"], summary="A return's parcel, scans and receipt")
    async def parcel(return_id: str) -> Response:
        try:
            rid = uuid.UUID(return_id)
        except ValueError:
            return error(404, f"unknown return {return_id!r}")
        found = await storage.get_parcel(rt.pool, rid)
        if found is None:
            return error(404, f"no parcel for return {return_id}")
        return json_response(found)

    @app.get("/v1/warehouse/scans/parked", tags=["warehouse"], summary="Scans waiting for their parcel")
    async def parked(limit: int = 100) -> Response:
        return json_response({"scans": await storage.parked_scans(rt.pool, max(1, min(limit, 1000)))})


SPEC: ServiceSpec[Any] = ServiceSpec(
    name="warehouse",
    folder=Path(__file__).parent,
    description="Expected parcels, carrier scans (matched or parked) and warehouse receipts; publishes "
    "parcel-scanned, return-received and the warehouse side of inventory attestations.",
    consumers=[ConsumerSpec("lifecycle", LIFECYCLE_TOPICS, lifecycle_handler)],
    routes=routes,
    on_start=[_start],
    on_stop=[_stop],
)


def app() -> FastAPI:
    return create_app(SPEC)
