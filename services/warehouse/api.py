"""HTTP of the warehouse service: signed carrier scans, device-authenticated receipts, a return's
parcel and the parked scans. Each route parses, calls a handler or a view, and maps the outcome to HTTP."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from returnflow.http import (
    BearerToken,
    Reader,
    context_dependency,
    correlation_id,
    error,
    find_by_token,
    json_body,
    json_request,
    json_response,
    parse_json,
    reader,
    signed_body,
    unauthorized,
)
from returnflow.openapi import problems, signed
from services.warehouse import views
from services.warehouse.handlers import Device, WarehouseContext
from services.warehouse.responses import (
    Parcel,
    ParcelToReceive,
    ParkedScans,
    ReceiptRecorded,
    ScanAccepted,
    WarehouseWhoAmI,
)
from services.warehouse.rules import (
    DoesNotFit,
    NoGoodsExpected,
    NoParcelExpected,
    ReceiptAccepted,
    ReceiptIdTaken,
    ReceiptIntake,
    ReceiptOutcome,
    SameReceiptAgain,
    ScanIntake,
    SecondReceipt,
    receipt_fingerprint,
    scan_identity,
)
from services.warehouse.schemas import CARRIER, ReceiptBody, ScanWebhook

Ctx = Annotated[WarehouseContext, Depends(context_dependency(WarehouseContext))]


def registered_device(token: BearerToken, ctx: Ctx) -> Device:
    device = find_by_token(token, ctx.devices)
    if device is None:
        raise unauthorized("a registered warehouse device's bearer token is required")
    return device


RegisteredDevice = Annotated[Device, Depends(registered_device)]


async def device_reader(ctx: WarehouseContext, token: str) -> Reader | None:
    """A registered device reads with the role `warehouse` (ServiceSpec.readers)."""
    device = find_by_token(token, ctx.devices)
    return Reader(device.device_id, "warehouse") if device is not None else None


# Parcels and parked scans: ops, the warehouse (its devices), agents.
ParcelReader = Annotated[Reader, Depends(reader("ops", "warehouse", "agent"))]
READ_ERRORS = problems(401, 403)

router = APIRouter()

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


@router.post(
    "/v1/webhooks/carriers/{carrier}/scans",
    status_code=202,
    tags=["webhooks"],
    summary="A carrier scan (signed, X-Returnflow-Signature); parked until its parcel is known",
    response_model=ScanAccepted,
    responses={
        202: {"model": ScanAccepted, "description": "matched or parked"},
        200: {"model": ScanAccepted, "description": "the same scan again"},
        **problems(401, 413, 415, 422, s401="the signature is missing, stale or wrong"),
    },
    openapi_extra=json_body(ScanWebhook, SCAN_EXAMPLE) | signed("returnflowSignature"),
)
async def carrier_scan(
    carrier: Annotated[str, Path(pattern=CARRIER.pattern, description="the carrier's slug")],
    request: Request,
    ctx: Ctx,
) -> Response:
    body = parse_json(ScanWebhook, await signed_body(request, ctx.runtime_settings, "carriers"))
    result = await ctx.scans.submit(ScanIntake(carrier, scan_identity(carrier, body), body, correlation_id(request)))
    return json_response(
        {
            "scan_id": result.scan_id,
            "status": "matched" if result.return_id else "parked",
            "return_id": str(result.return_id) if result.return_id else None,
            "duplicate": result.duplicate,
        },
        200 if result.duplicate else 202,
    )


@router.post(
    "/v1/warehouse/receipts",
    status_code=201,
    tags=["warehouse"],
    summary="What came back, per SKU (Authorization: Bearer <device token>)",
    response_model=ReceiptRecorded,
    responses={
        201: {"model": ReceiptRecorded, "description": "recorded"},
        200: {"model": ReceiptRecorded, "description": "the same receipt again"},
        **problems(
            401,
            404,
            409,
            413,
            415,
            422,
            s404="no parcel is expected for this tracking number or return",
            s409="no goods expected back, a second receipt, or a receipt id used for another return",
        ),
    },
    openapi_extra=json_body(ReceiptBody, RECEIPT_EXAMPLE),
)
async def receipt(request: Request, ctx: Ctx, device: RegisteredDevice) -> Response:
    body = await json_request(request, ReceiptBody, ctx.runtime_settings.webhook_max_body_bytes)
    intake = ReceiptIntake(
        device.device_id, device.warehouse_id, body, receipt_fingerprint(body), correlation_id(request)
    )
    return receipt_response(await ctx.receipts.submit(intake))


def receipt_response(outcome: ReceiptOutcome) -> Response:
    match outcome:
        case ReceiptAccepted(receipt_id, rid):
            return json_response({"receipt_id": receipt_id, "return_id": str(rid), "duplicate": False}, 201)
        case SameReceiptAgain(receipt_id, rid):
            return json_response({"receipt_id": receipt_id, "return_id": str(rid), "duplicate": True}, 200)
        case NoParcelExpected(reference):
            return error(404, f"no parcel is expected for {reference} (unknown return?)")
        case NoGoodsExpected(rid, kind):
            return error(409, f"return {rid} is {kind}: no goods are expected back")
        case SecondReceipt(receipt_id, rid):
            message = f"return {rid} already has receipt {receipt_id}; a second receipt is not accepted"
            return error(409, message, receipt_id=receipt_id)
        case ReceiptIdTaken(receipt_id):
            return error(409, f"receipt id {receipt_id!r} was already used for another return")
        case DoesNotFit(fields):
            return error(422, "receipt does not fit the return", fields=fields)
    raise AssertionError(f"unhandled receipt outcome {outcome!r}")


@router.get(
    "/v1/warehouse/parcels",
    tags=["warehouse"],
    summary="The parcel a tracking number belongs to: its return and the lines expected back (reader token: ops, "
    "warehouse, agent; or a device's token)",
    description="For the receiving screen: scan or type the tracking number (surrounding spaces are ignored). "
    "404 (naming `tracking_number`) when no parcel is expected with it.",
    response_model=ParcelToReceive,
    responses=problems(401, 403, 404, 422, s404="no parcel is expected with this tracking number"),
)
async def parcel_by_tracking_number(
    ctx: Ctx,
    _: ParcelReader,
    tracking_number: Annotated[str, Query(min_length=1, max_length=64, description="as on the label")],
) -> Response:
    wanted = tracking_number.strip()
    found = await views.parcel_to_receive(ctx.pool, wanted) if wanted else None
    if found is None:
        return error(
            404,
            f"no parcel is expected with tracking number {wanted!r}",
            fields=[{"field": "tracking_number", "message": "no parcel is expected with it"}],
        )
    return json_response(found)


@router.get(
    "/v1/warehouse/parcels/{return_id}",
    tags=["warehouse"],
    summary="A return's parcel, scans and receipt (reader token: ops, warehouse, agent; or a device's token)",
    response_model=Parcel,
    responses=problems(401, 403, 404),
)
async def parcel(return_id: UUID, ctx: Ctx, _: ParcelReader) -> Response:
    found = await views.parcel_view(ctx.pool, return_id)
    if found is None:
        return error(404, f"no parcel for return {return_id}")
    return json_response(found)


@router.get(
    "/v1/warehouse/whoami",
    tags=["warehouse"],
    summary="The device or staff member a bearer token belongs to (what the workbench's sign-in checks)",
    response_model=WarehouseWhoAmI,
    responses=problems(401),
)
async def whoami(device: RegisteredDevice) -> Response:
    return json_response({"id": device.device_id, "warehouse_id": device.warehouse_id, "kind": device.kind})


@router.get(
    "/v1/warehouse/scans/parked",
    tags=["warehouse"],
    summary="Scans waiting for their parcel (reader token: ops, warehouse, agent; or a device's token)",
    response_model=ParkedScans,
    responses=READ_ERRORS,
)
async def parked(ctx: Ctx, _: ParcelReader, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Response:
    return json_response({"scans": await views.parked_scans(ctx.pool, limit)})
