"""An exchange's replacement in the warehouse service, against a real PostgreSQL without a broker:
shipped once (the same request again is harmless, a second refused, a mismatch named by field), attested
as stock leaving, delivered by its outgoing parcel's scans (before or after the shipment is recorded),
out of stock reported for a person, and shipped before the goods are back when refunds released it at the
first moving scan."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from contracts.events import (
    ExchangeOutOfStock,
    InventoryAttested,
    Movement,
    ParcelScanned,
    RefundBasis,
    RefundDecided,
    ReplacementDelivered,
    ReplacementReleased,
    ReplacementShipped,
    ReturnKind,
    ReturnRequested,
)
from returnflow.settings import Settings
from services.warehouse import SPEC, dev, handlers
from services.warehouse.handlers import OutOfStockIntake, ShipmentIntake
from services.warehouse.rules import (
    AlreadyShipped,
    DoesNotFit,
    ExchangeClosed,
    NotAnExchange,
    OutOfStockAccepted,
    OutOfStockAgain,
    ReceiptIntake,
    SameShipmentAgain,
    ScanIntake,
    SecondShipment,
    ShipmentAccepted,
    receipt_fingerprint,
    scan_identity,
)
from services.warehouse.schemas import OutOfStockBody, ReceiptBody, ReplacementBody, ScanWebhook
from tests.handlers.harness import Harness, harness

T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


@pytest.fixture
async def h(handler_settings: Settings) -> AsyncIterator[Harness]:
    async with harness(SPEC, handler_settings, dev.dev_settings(batch_wait_ms=5)) as h:
        yield h


def exchange(kind: ReturnKind = ReturnKind.exchange) -> ReturnRequested:
    return ReturnRequested.model_validate(
        {
            "occurred_at": T0,
            "return_id": uuid.uuid4(),
            "correlation_id": "corr-r",
            "shop_id": "shop-1",
            "platform": "generic",
            "platform_return_id": f"pr-{uuid.uuid4().hex[:8]}",
            "order_id": "o-1",
            "kind": kind,
            "customer": {"id": "c-1", "phone": "+8613812345678"},
            "currency": "CNY",
            "paid_total": 9000,
            "lines": [
                {"sku": "SHOE-41", "qty": 1, "unit_price": 6000, "reason": "size", "replacement_sku": "SHOE-42"},
                {"sku": "SOCKS", "qty": 2, "unit_price": 1000, "reason": "colour"},
            ],
            "tracking_no": f"IN{uuid.uuid4().hex[:10].upper()}",
            "requested_by": {"type": "customer"},
            "requested_at": T0,
        }
    )


async def received(h: Harness, ask: ReturnRequested) -> None:
    await h.apply("lifecycle", [ask])
    lines = [
        {"sku": "SHOE-41", "qty_received": 1, "condition": "as_described", "disposition": "restock"},
        {"sku": "SOCKS", "qty_received": 2, "condition": "as_described", "disposition": "restock"},
    ]
    b = ReceiptBody.model_validate({"inspector_id": "insp", "return_id": ask.return_id, "lines": lines})
    await h.ctx.receipts.submit(ReceiptIntake("dock-1", "WH-DEMO", b, receipt_fingerprint(b), "corr-w"))


GOOD = [{"sku": "SHOE-42", "qty": 1}, {"sku": "SOCKS", "qty": 2}]


async def ship(h: Harness, rid: uuid.UUID, **over: Any) -> Any:
    body = {"return_id": rid, "carrier": "sf", "tracking_no": "SFOUT0001", "packed_by": "packer-li", "lines": GOOD}
    b = ReplacementBody.model_validate(body | over)
    return await handlers.ship_replacement(h.ctx, ShipmentIntake("dock-1", "WH-DEMO", b, "corr-x"))


async def scan(h: Harness, tracking_no: str, code: str, hours: int) -> Any:
    at = (T0 + timedelta(hours=hours)).isoformat()
    body = ScanWebhook.model_validate({"tracking_no": tracking_no, "scan_code": code, "scanned_at": at})
    return await h.ctx.scans.submit(ScanIntake("sf", scan_identity("sf", body), body, "corr-s"))


async def test_a_replacement_ships_once_with_its_stock_movement_attested(h: Harness) -> None:
    ask = exchange()
    await received(h, ask)
    rid = ask.return_id
    first, again = await asyncio.gather(ship(h, rid, shipment_id="pack-1"), ship(h, rid, shipment_id="pack-1"))
    assert {type(first), type(again)} == {ShipmentAccepted, SameShipmentAgain}  # concurrent duplicates: one
    assert await ship(h, rid) == SameShipmentAgain("pack-1", rid, "SFOUT0001")  # same content, no id: same answer
    assert await ship(h, rid, tracking_no="SFOUT0002") == SecondShipment("pack-1", rid)
    (shipped,) = await h.published(ReplacementShipped)
    assert (shipped.tracking_no, shipped.shipped_by, [(x.sku, x.qty) for x in shipped.lines]) == (
        "SFOUT0001",
        "packer-li",
        [("SHOE-42", 1), ("SOCKS", 2)],
    )
    stored = await h.pool.fetchval("SELECT lines FROM replacements WHERE return_id = $1", rid)
    assert stored == [{"sku": "SHOE-42", "qty": 1}, {"sku": "SOCKS", "qty": 2}]  # a JSON array, not a string
    out = [a for a in await h.published(InventoryAttested) if a.movement == Movement.replacement_out]
    assert [(a.attestation_id, a.sku, a.quantity, a.attested_by) for a in out] == [
        ("pack-1:1", "SHOE-42", 1, "packer-li"),
        ("pack-1:2", "SOCKS", 2, "packer-li"),
    ]


async def test_a_shipment_not_matching_the_exchange_names_the_field(h: Harness) -> None:
    ask = exchange()
    await received(h, ask)
    wrong = [{"sku": "SHOE-41", "qty": 1}, {"sku": "SOCKS", "qty": 3}]
    outcome = await ship(h, ask.return_id, lines=wrong, tracking_no=ask.tracking_no)
    assert isinstance(outcome, DoesNotFit)
    assert [f["field"] for f in outcome.fields] == ["lines.0.sku", "lines.1.qty", "lines", "tracking_no"]
    assert await h.published(ReplacementShipped) == []


async def test_no_replacement_before_the_goods_are_back_nor_for_a_return(h: Harness) -> None:
    ask, plain = exchange(), exchange(ReturnKind.return_and_refund)
    await h.apply("lifecycle", [ask, plain])
    assert isinstance(await ship(h, ask.return_id), ExchangeClosed)
    assert await ship(h, plain.return_id) == NotAnExchange(plain.return_id, "return_and_refund")


async def test_outgoing_scans_deliver_the_replacement_once_even_when_they_came_first(h: Harness) -> None:
    ask = exchange()
    await received(h, ask)
    early = await scan(h, "SFOUT0001", "picked_up", 1)  # the courier's scan before the warehouse's call
    assert early.return_id is None
    await ship(h, ask.return_id)
    assert (await scan(h, "SFOUT0001", "delivered", 30)).return_id == ask.return_id
    await scan(h, "SFOUT0001", "delivered", 31)  # a second delivered scan
    (delivered,) = await h.published(ReplacementDelivered)
    assert delivered.delivered_at == T0 + timedelta(hours=30) and delivered.tracking_no == "SFOUT0001"
    assert [e.tracking_no for e in await h.published(ParcelScanned)] == []  # not the return's own parcel
    found = await h.pool.fetchval("SELECT delivered_at FROM replacements WHERE return_id = $1", ask.return_id)
    assert found == delivered.delivered_at


async def test_out_of_stock_is_reported_once_and_never_after_the_shipment(h: Harness) -> None:
    ask = exchange()
    await received(h, ask)

    async def report(skus: list[str]) -> Any:
        b = OutOfStockBody.model_validate({"return_id": ask.return_id, "skus": skus, "reported_by": "packer-li"})
        return await handlers.report_out_of_stock(h.ctx, OutOfStockIntake("dock-1", "WH-DEMO", b, "corr-o"))

    assert [f["field"] for f in (await report(["SHOE-41"])).fields] == ["skus.0"]
    assert await report(["SHOE-42"]) == OutOfStockAccepted(ask.return_id)
    assert await report(["SHOE-42"]) == OutOfStockAgain(ask.return_id)
    (event,) = await h.published(ExchangeOutOfStock)
    assert event.skus == ["SHOE-42"] and event.reported_by == "packer-li"
    assert isinstance(await ship(h, ask.return_id), ShipmentAccepted)  # stock came back
    assert isinstance(await report(["SHOE-42"]), AlreadyShipped)


async def test_an_exchange_converted_to_a_refund_ships_no_replacement(h: Harness) -> None:
    ask = exchange()
    await received(h, ask)
    conversion = RefundDecided(
        occurred_at=T0,
        return_id=ask.return_id,
        correlation_id="c",
        decision="refund",
        amount=8000,
        currency="CNY",
        basis=RefundBasis.exchange_conversion,
    )
    goodwill = conversion.model_copy(update={"basis": RefundBasis.agent_authority, "return_id": uuid.uuid4()})
    await h.apply("lifecycle", [conversion, goodwill])
    assert await ship(h, ask.return_id) == ExchangeClosed(ask.return_id, "the exchange was converted to a refund")
    assert await h.published(ReplacementShipped) == []


async def test_a_replacement_released_at_the_first_scan_ships_before_the_goods_are_back(h: Harness) -> None:
    ask, other, came_first = exchange(), exchange(), exchange()

    def release(rid: uuid.UUID) -> ReplacementReleased:
        return ReplacementReleased(occurred_at=T0, return_id=rid, correlation_id="corr-rel")

    await h.apply("lifecycle", [release(came_first.return_id)])  # before its request: kept for it
    await h.apply("lifecycle", [ask, other, came_first])
    await h.apply("lifecycle", [release(ask.return_id), release(ask.return_id)])  # redelivered: harmless
    assert isinstance(await ship(h, ask.return_id), ShipmentAccepted)
    assert isinstance(await ship(h, came_first.return_id, tracking_no="SFOUT0003"), ShipmentAccepted)
    refused = await ship(h, other.return_id, tracking_no="SFOUT0002")  # not released: still after receipt
    assert refused == ExchangeClosed(other.return_id, "its goods have not been received yet")
    assert {e.return_id for e in await h.published(ReplacementShipped)} == {ask.return_id, came_first.return_id}
    assert await ship(h, ask.return_id, tracking_no="SFOUT0009") == SecondShipment(
        (await h.published(ReplacementShipped))[0].shipment_id, ask.return_id
    )
