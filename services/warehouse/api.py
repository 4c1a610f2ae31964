"""HTTP of the warehouse service: signed carrier scans, device-authenticated receipts, a return's
parcel and the parked scans. Each route parses, calls a handler or a view, and maps the outcome to HTTP."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import parse_qs
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from returnflow.db import snapshot
from returnflow.http import (
    BearerToken,
    BodyTooLarge,
    HttpProblem,
    Reader,
    context_dependency,
    correlation_id,
    error,
    find_by_token,
    is_json,
    json_body,
    json_request,
    json_response,
    parse_json,
    problem_json,
    read_body,
    reader,
    signed_body,
    unauthorized,
)
from returnflow.openapi import problems, signed
from returnflow.signing import SignatureError
from services.warehouse import handlers, rules, views
from services.warehouse.handlers import (
    Device,
    FeedOutcome,
    OutOfStockIntake,
    ShipmentIntake,
    WarehouseContext,
    report_out_of_stock,
    ship_replacement,
)
from services.warehouse.responses import (
    KUAIDI100_OK,
    FeedAccepted,
    Kuaidi100Answer,
    OutOfStockRecorded,
    Parcel,
    ParcelToReceive,
    ParkedScans,
    ReceiptRecorded,
    ReplacementRecorded,
    ScanAccepted,
    WarehouseWhoAmI,
)
from services.warehouse.rules import (
    AlreadyShipped,
    DoesNotFit,
    ExchangeClosed,
    NoGoodsExpected,
    NoParcelExpected,
    NotAnExchange,
    OutOfStockAccepted,
    OutOfStockAgain,
    OutOfStockOutcome,
    ReceiptAccepted,
    ReceiptIdTaken,
    ReceiptIntake,
    ReceiptOutcome,
    SameReceiptAgain,
    SameShipmentAgain,
    ScanIntake,
    SecondReceipt,
    SecondShipment,
    ShipmentAccepted,
    ShipmentIdTaken,
    ShipmentOutcome,
    receipt_fingerprint,
    scan_identity,
)
from services.warehouse.schemas import (
    CARRIER,
    AfterShipWebhook,
    Kuaidi100Push,
    OutOfStockBody,
    ReceiptBody,
    ReplacementBody,
    ScanWebhook,
)
from services.warehouse.signatures import AFTERSHIP_HMAC_HEADER, aftership_verify, kuaidi100_verify

Ctx = Annotated[WarehouseContext, Depends(context_dependency(WarehouseContext))]


async def registered_device(token: BearerToken, ctx: Ctx) -> Device:
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


# -- courier tracking feeds (docs/couriers.md) -------------------------------------------------------------

KUAIDI100_EXAMPLE_PARAM = {
    "status": "polling",
    "message": "",
    "lastResult": {
        "message": "ok",
        "nu": "SF1402918820461",
        "com": "shunfeng",
        "state": "1",
        "ischeck": "0",
        "status": "200",
        "data": [
            {
                "time": "2026-11-22 09:30:12",
                "ftime": "2026-11-22 09:30:12",
                "context": "[杭州市]顺丰速运 已收取快件",
                "status": "揽收",
                "statusCode": "103",
                "areaCode": "CN330100000000",
                "areaName": "浙江,杭州市",
            }
        ],
    },
}
KUAIDI100_FORM = {
    "type": "object",
    "required": ["param", "sign"],
    "properties": {
        "param": {"type": "string", "description": "the push as JSON (status, message, lastResult)"},
        "sign": {"type": "string", "description": "uppercase hex MD5 of param + the subscription's salt"},
    },
}


def not_configured(setting: str) -> HttpProblem:
    return HttpProblem(503, f"this courier feed is not configured ({setting} is empty)")


def feed_signature(check: Callable[[], None]) -> None:
    try:
        check()
    except SignatureError as exc:
        raise HttpProblem(401, str(exc)) from None


def kuaidi100_failure(p: HttpProblem) -> Response:
    """Problem details that Kuaidi100 also reads as a failure (result false): it pushes again later."""
    return problem_json(p.status, p.message, p.fields, result=False, returnCode=str(p.status), message=p.message)


def kuaidi100_form(raw: bytes) -> tuple[str, str | None]:
    """The form's `param` and `sign` (one each)."""
    try:
        form = parse_qs(raw.decode(), keep_blank_values=True, strict_parsing=bool(raw))
    except (UnicodeDecodeError, ValueError):
        raise HttpProblem(422, "not a form", [{"field": "body", "message": "not URL-encoded UTF-8"}]) from None
    bad = [{"field": k, "message": "sent more than once"} for k in ("param", "sign") if len(form.get(k, [])) > 1]
    if "param" not in form:
        bad.append({"field": "param", "message": "required: the push as JSON"})
    if bad:
        raise HttpProblem(422, "validation failed", bad)
    signs = form.get("sign", [])
    return form["param"][0], signs[0] if signs else None


def kuaidi100_push(param: str) -> Kuaidi100Push:
    try:
        return parse_json(Kuaidi100Push, param.encode())
    except HttpProblem as p:
        fields = [dict(f, field=f"param.{f['field']}" if f["field"] != "body" else "param") for f in p.fields or []]
        raise HttpProblem(422, "param is not a valid Kuaidi100 push", fields) from None


@router.post(
    "/v1/webhooks/couriers/kuaidi100",
    tags=["webhooks"],
    summary="A Kuaidi100 subscription push (form: param, sign = MD5(param + salt)); each checkpoint a scan",
    response_model=Kuaidi100Answer,
    responses={
        200: {"model": Kuaidi100Answer, "description": "recorded (Kuaidi100's success answer)"},
        **problems(
            401,
            413,
            415,
            422,
            503,
            s401="sign is missing or wrong (Kuaidi100 pushes again later)",
            s503="no Kuaidi100 salt is configured, or the database is unavailable",
        ),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": KUAIDI100_FORM,
                    "example": {"param": json.dumps(KUAIDI100_EXAMPLE_PARAM, ensure_ascii=False), "sign": "…"},
                }
            },
        }
    },
)
async def kuaidi100(request: Request, ctx: Ctx) -> Response:
    try:
        salts = [s.get_secret_value() for s in ctx.settings.kuaidi100_salts]
        if not salts:
            raise not_configured("RETURNFLOW_WAREHOUSE_KUAIDI100_SALTS")
        raw = await feed_body(request, ctx)
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != FORM:
            raise HttpProblem(415, f"content-type must be {FORM}")
        param, sign = kuaidi100_form(raw)
        feed_signature(lambda: kuaidi100_verify(sign, param, salts))
        push = kuaidi100_push(param)
        await handlers.accept_kuaidi100(ctx, push, correlation_id(request))
    except HttpProblem as p:
        return kuaidi100_failure(p)
    return json_response(KUAIDI100_OK)


AFTERSHIP_EXAMPLE = {
    "event": "tracking_update",
    "event_id": "4b7f3a52-8e0a-4f0c-9d7e-2c1a6b5e9f10",
    "is_tracking_first_tag": True,
    "ts": 1795683000,
    "msg": {
        "id": "k5lh7dy7vvqeck71p5loe011",
        "tracking_number": "1Z999AA10123456784",
        "slug": "ups",
        "tag": "InTransit",
        "subtag": "InTransit_002",
        "checkpoints": [
            {
                "slug": "ups",
                "created_at": "2026-11-22T17:31:05+00:00",
                "checkpoint_time": "2026-11-22T09:30:00-08:00",
                "city": "Oakland",
                "location": "Oakland, CA, US",
                "message": "Picked up by the carrier",
                "tag": "InTransit",
                "subtag": "InTransit_002",
                "subtag_message": "Acceptance scan",
            }
        ],
    },
}


@router.post(
    "/v1/webhooks/couriers/aftership",
    tags=["webhooks"],
    summary="An AfterShip Tracking webhook (aftership-hmac-sha256); each checkpoint a scan",
    response_model=FeedAccepted,
    responses={
        200: {"model": FeedAccepted, "description": "each checkpoint recorded (matched or parked) or seen before"},
        **problems(
            401,
            413,
            415,
            422,
            503,
            s401=f"{AFTERSHIP_HMAC_HEADER} is missing or wrong",
            s503="no AfterShip webhook secret is configured, or the database is unavailable",
        ),
    },
    openapi_extra=json_body(AfterShipWebhook, AFTERSHIP_EXAMPLE) | signed("aftershipHmac"),
)
async def aftership(request: Request, ctx: Ctx) -> Response:
    secrets = [s.get_secret_value() for s in ctx.settings.aftership_webhook_secrets]
    if not secrets:
        raise not_configured("RETURNFLOW_WAREHOUSE_AFTERSHIP_WEBHOOK_SECRETS")
    raw = await feed_body(request, ctx)
    feed_signature(lambda: aftership_verify(request.headers.get(AFTERSHIP_HMAC_HEADER), raw, secrets))
    if not is_json(request):
        raise HttpProblem(415, "content-type must be application/json")
    hook = parse_json(AfterShipWebhook, raw)
    feed = rules.aftership_scans(hook)
    outcome = await handlers.accept_feed(ctx, "aftership", feed, correlation_id(request))
    return json_response(feed_answer(len(hook.msg.checkpoints), len(feed.unmapped), outcome))


FORM = "application/x-www-form-urlencoded"


async def feed_body(request: Request, ctx: WarehouseContext) -> bytes:
    limit = ctx.runtime_settings.webhook_max_body_bytes
    try:
        return await read_body(request, limit)
    except BodyTooLarge:
        raise HttpProblem(413, f"body larger than {limit} bytes") from None


def feed_answer(checkpoints: int, skipped: int, outcome: FeedOutcome) -> dict[str, Any]:
    return {
        "checkpoints": checkpoints,
        "recorded": [
            {
                "scan_id": r.scan_id,
                "status": "matched" if r.return_id else "parked",
                "return_id": str(r.return_id) if r.return_id else None,
            }
            for r in outcome.recorded
        ],
        "duplicates": outcome.duplicates,
        "skipped": skipped,
    }


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


REPLACEMENT_EXAMPLE = {
    "shipment_id": "pack-2-000045",
    "return_id": "0b9e7f3c-59a4-4a0e-9a52-3f1f6f0c2d11",
    "carrier": "sf",
    "tracking_no": "SF9876543210",
    "packed_by": "packer-li",
    "lines": [{"sku": "SHOE-42", "qty": 1}],
}


@router.post(
    "/v1/warehouse/replacements",
    status_code=201,
    tags=["warehouse"],
    summary="An exchange's replacement handed to a courier (Authorization: Bearer <device token>)",
    response_model=ReplacementRecorded,
    responses={
        201: {"model": ReplacementRecorded, "description": "recorded: exchange.replacement_shipped published"},
        200: {"model": ReplacementRecorded, "description": "the same shipment again"},
        **problems(
            401,
            404,
            409,
            413,
            415,
            422,
            s404="no exchange is known by this return id",
            s409="not an exchange, cancelled, goods not received yet, a second shipment, or a shipment id in use",
            s422="a SKU or quantity not matching the exchange request, or a tracking number in use (field named)",
        ),
    },
    openapi_extra=json_body(ReplacementBody, REPLACEMENT_EXAMPLE),
)
async def replacement(request: Request, ctx: Ctx, device: RegisteredDevice) -> Response:
    body = await json_request(request, ReplacementBody, ctx.runtime_settings.webhook_max_body_bytes)
    intake = ShipmentIntake(device.device_id, device.warehouse_id, body, correlation_id(request))
    return replacement_response(await ship_replacement(ctx, intake))


def replacement_response(outcome: ShipmentOutcome) -> Response:
    match outcome:
        case ShipmentAccepted(shipment_id, rid, tracking_no):
            body = {"shipment_id": shipment_id, "return_id": str(rid), "tracking_no": tracking_no}
            return json_response(body | {"duplicate": False}, 201)
        case SameShipmentAgain(shipment_id, rid, tracking_no):
            body = {"shipment_id": shipment_id, "return_id": str(rid), "tracking_no": tracking_no}
            return json_response(body | {"duplicate": True}, 200)
        case NoParcelExpected(reference):
            return error(404, f"no exchange is known as {reference}")
        case NotAnExchange(rid, kind):
            return error(409, f"return {rid} is {kind}, not an exchange: no replacement is sent")
        case ExchangeClosed(rid, reason):
            return error(409, f"no replacement for return {rid} now: {reason}")
        case SecondShipment(shipment_id, rid):
            message = f"return {rid} already has replacement shipment {shipment_id}; a second one is not accepted"
            return error(409, message, shipment_id=shipment_id)
        case ShipmentIdTaken(shipment_id):
            return error(409, f"shipment id {shipment_id!r} was already used for another return")
        case DoesNotFit(fields):
            return error(422, "the shipment does not match the exchange request", fields=fields)
    raise AssertionError(f"unhandled shipment outcome {outcome!r}")


@router.post(
    "/v1/warehouse/replacements/out-of-stock",
    status_code=201,
    tags=["warehouse"],
    summary="No replacement in stock: the exchange goes to a person (Authorization: Bearer <device token>)",
    response_model=OutOfStockRecorded,
    responses={
        201: {"model": OutOfStockRecorded, "description": "recorded: exchange.out_of_stock published"},
        200: {"model": OutOfStockRecorded, "description": "reported before"},
        **problems(401, 404, 409, 413, 415, 422, s409="not an exchange, or its replacement already shipped"),
    },
    openapi_extra=json_body(
        OutOfStockBody, {"return_id": REPLACEMENT_EXAMPLE["return_id"], "skus": ["SHOE-42"], "reported_by": "packer-li"}
    ),
)
async def out_of_stock(request: Request, ctx: Ctx, device: RegisteredDevice) -> Response:
    body = await json_request(request, OutOfStockBody, ctx.runtime_settings.webhook_max_body_bytes)
    intake = OutOfStockIntake(device.device_id, device.warehouse_id, body, correlation_id(request))
    return out_of_stock_response(await report_out_of_stock(ctx, intake))


def out_of_stock_response(outcome: OutOfStockOutcome) -> Response:
    match outcome:
        case OutOfStockAccepted(rid):
            return json_response({"return_id": str(rid), "duplicate": False}, 201)
        case OutOfStockAgain(rid):
            return json_response({"return_id": str(rid), "duplicate": True}, 200)
        case NoParcelExpected(reference):
            return error(404, f"no exchange is known as {reference}")
        case NotAnExchange(rid, kind):
            return error(409, f"return {rid} is {kind}, not an exchange")
        case AlreadyShipped(rid, shipment_id):
            return error(409, f"return {rid}'s replacement already shipped ({shipment_id})", shipment_id=shipment_id)
        case DoesNotFit(fields):
            return error(422, "the report does not match the exchange request", fields=fields)
    raise AssertionError(f"unhandled out-of-stock outcome {outcome!r}")


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
    async with snapshot(ctx.pool) as db:  # the parcel, its scans and receipt as of one moment
        found = await views.parcel_view(db, return_id)
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
