"""The warehouse service's steps against a real PostgreSQL, without a broker: the lifecycle consumer
(expected parcels, tracking numbers, cancellations; parked scans matched when their parcel becomes
known), carrier scans and device receipts through their group commits."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from contracts.events import (
    InventoryAttested,
    Movement,
    ParcelScanned,
    ReturnCancelled,
    ReturnKind,
    ReturnReceived,
    ReturnRequested,
    TrackingRegistered,
)
from returnflow.settings import Settings
from services.warehouse import SPEC, dev
from services.warehouse.rules import (
    DoesNotFit,
    NoGoodsExpected,
    NoParcelExpected,
    ReceiptAccepted,
    ReceiptIntake,
    SameReceiptAgain,
    ScanIntake,
    ScanResult,
    SecondReceipt,
    receipt_fingerprint,
    scan_identity,
)
from services.warehouse.schemas import ReceiptBody, ScanWebhook
from tests.handlers.harness import Harness, harness

T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


@pytest.fixture
async def h(handler_settings: Settings) -> AsyncIterator[Harness]:
    async with harness(SPEC, handler_settings, dev.dev_settings(batch_wait_ms=5)) as h:
        yield h


def requested(tracking_no: str | None = None, kind: ReturnKind = ReturnKind.return_and_refund) -> ReturnRequested:
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
                {"sku": "A", "qty": 2, "unit_price": 2000, "reason": "size"},
                {"sku": "B", "qty": 1, "unit_price": 5000, "reason": "damaged"},
            ],
            "tracking_no": tracking_no,
            "requested_by": {"type": "customer"},
            "requested_at": T0,
        }
    )


def registered(rid: uuid.UUID, tracking_no: str, at: datetime = T0) -> TrackingRegistered:
    return TrackingRegistered(occurred_at=at, return_id=rid, correlation_id="corr-t", tracking_no=tracking_no)


async def scan(h: Harness, tracking_no: str, code: str, minutes: int) -> ScanResult:
    body = ScanWebhook.model_validate(
        {"tracking_no": tracking_no, "scan_code": code, "scanned_at": (T0 + timedelta(minutes=minutes)).isoformat()}
    )
    result: ScanResult = await h.ctx.scans.submit(ScanIntake("sf", scan_identity("sf", body), body, "corr-s"))
    return result


async def parcel(h: Harness, rid: uuid.UUID) -> dict[str, Any]:
    row = await h.pool.fetchrow("SELECT * FROM parcels WHERE return_id = $1", rid)
    assert row is not None
    return dict(row)


# -- the lifecycle consumer -------------------------------------------------------------------------------


async def test_a_requested_return_is_an_expected_parcel_with_its_lines(h: Harness) -> None:
    ask = requested("SF-1")
    await h.apply("lifecycle", [ask, ask])  # delivered twice in one batch
    p = await parcel(h, ask.return_id)
    assert p["requested"] and p["kind"] == "return_and_refund" and p["tracking_no"] == "SF-1"
    lines = await h.pool.fetch("SELECT sku, qty FROM parcel_lines WHERE return_id = $1 ORDER BY line_no", ask.return_id)
    assert [(r["sku"], r["qty"]) for r in lines] == [("A", 2), ("B", 1)]


async def test_tracking_registered_before_or_after_the_request_and_the_latest_wins(h: Harness) -> None:
    ask = requested()
    await h.apply("lifecycle", [registered(ask.return_id, "SF-EARLY")])  # before the request is known
    assert (await parcel(h, ask.return_id))["requested"] is False
    await h.apply("lifecycle", [ask])
    assert (await parcel(h, ask.return_id))["tracking_no"] == "SF-EARLY"
    later = registered(ask.return_id, "SF-LATE", T0 + timedelta(minutes=2))
    await h.apply("lifecycle", [later, registered(ask.return_id, "SF-MID", T0 + timedelta(minutes=1))])
    assert (await parcel(h, ask.return_id))["tracking_no"] == "SF-LATE"


async def test_a_tracking_number_held_by_another_return_is_not_re_pointed(h: Harness) -> None:
    first, second = requested("SF-TAKEN"), requested()
    await h.apply("lifecycle", [first, second])
    await h.apply("lifecycle", [registered(second.return_id, "SF-TAKEN")])
    assert (await parcel(h, first.return_id))["tracking_no"] == "SF-TAKEN"
    assert (await parcel(h, second.return_id))["tracking_no"] is None


async def test_a_cancelled_return_is_marked(h: Harness) -> None:
    ask = requested()
    cancel = ReturnCancelled(occurred_at=T0 + timedelta(hours=1), return_id=ask.return_id, correlation_id="c")
    await h.apply("lifecycle", [ask, cancel])
    assert (await parcel(h, ask.return_id))["cancelled_at"] == cancel.occurred_at


# -- scans: parked until their parcel is known -------------------------------------------------------------


async def test_parked_scans_are_published_when_the_return_arrives_the_earliest_moving_one_first(h: Harness) -> None:
    results = await asyncio.gather(
        scan(h, "SF-PARK", "in_transit", 30), scan(h, "SF-PARK", "accepted", 0), scan(h, "SF-PARK", "picked_up", 10)
    )
    assert all(r.return_id is None and not r.duplicate for r in results)
    assert await h.published(ParcelScanned) == []
    ask = requested("SF-PARK")
    await h.apply("lifecycle", [ask])
    published = await h.published(ParcelScanned)
    assert [(e.scan_code, e.first_moving) for e in published] == [
        ("accepted", False),
        ("picked_up", True),
        ("in_transit", False),
    ]
    assert {e.return_id for e in published} == {ask.return_id}
    assert (await parcel(h, ask.return_id))["first_moving_scan_id"] == published[1].scan_id
    later = await scan(h, "SF-PARK", "delivered", 60)  # the parcel is known now: matched at once
    assert later.return_id == ask.return_id
    assert [e.first_moving for e in await h.published(ParcelScanned)][3:] == [False]  # once per parcel


async def test_a_scan_parked_on_a_tracking_number_registered_later_is_matched(h: Harness) -> None:
    ask = requested()
    await h.apply("lifecycle", [ask])
    assert (await scan(h, "SF-REG", "picked_up", 5)).return_id is None
    await h.apply("lifecycle", [registered(ask.return_id, "SF-REG")])
    (published,) = await h.published(ParcelScanned)
    assert published.return_id == ask.return_id and published.first_moving


async def test_the_same_scan_delivered_twice_is_recorded_and_published_once(h: Harness) -> None:
    ask = requested("SF-DUP")
    await h.apply("lifecycle", [ask])
    first, again = await asyncio.gather(scan(h, "SF-DUP", "picked_up", 5), scan(h, "SF-DUP", "picked_up", 5))
    assert sorted([first.duplicate, again.duplicate]) == [False, True]
    assert (await scan(h, "SF-DUP", "picked_up", 5)).duplicate
    assert len(await h.published(ParcelScanned)) == 1


# -- receipts -> return received + warehouse attestations ---------------------------------------------------

FITS = [
    {"sku": "A", "qty_received": 2, "condition": "as_described", "disposition": "restock"},
    {"sku": "B", "qty_received": 1, "condition": "damaged", "disposition": "destroy"},
]


async def receipt(h: Harness, **body: Any) -> Any:
    b = ReceiptBody.model_validate({"inspector_id": "insp-wang", "lines": FITS, **body})
    return await h.ctx.receipts.submit(ReceiptIntake("dock-1", "WH-DEMO", b, receipt_fingerprint(b), "corr-w"))


async def test_a_receipt_publishes_return_received_and_one_attestation_per_movement(h: Harness) -> None:
    ask = requested("SF-RC")
    await h.apply("lifecycle", [ask])
    assert await receipt(h, tracking_no="SF-RC", receipt_id="dock-1-1") == ReceiptAccepted("dock-1-1", ask.return_id)
    (received,) = await h.published(ReturnReceived)
    assert received.warehouse_id == "WH-DEMO" and received.correlation_id == "corr-w"
    assert [(x.sku, x.qty_requested, x.qty_received, x.unit_price) for x in received.lines] == [
        ("A", 2, 2, 2000),
        ("B", 1, 1, 5000),
    ]
    attested = await h.published(InventoryAttested)
    assert [(a.attestation_id, a.sku, a.movement, a.quantity, a.source) for a in attested] == [
        ("dock-1-1:1", "A", Movement.restock, 2, "warehouse"),
        ("dock-1-1:2", "B", Movement.destroy, 1, "warehouse"),
    ]
    stored = await h.pool.fetchrow("SELECT device_id, lines FROM receipts WHERE receipt_id = 'dock-1-1'")
    assert stored["device_id"] == "dock-1" and [x["sku"] for x in stored["lines"]] == ["A", "B"]


async def test_receipts_refused_as_before_and_a_second_receipt_never_overwrites(h: Harness) -> None:
    ask, free = requested(), requested(kind=ReturnKind.refund_only)
    await h.apply("lifecycle", [ask, free])
    unknown = uuid.uuid4()
    assert await receipt(h, return_id=str(unknown)) == NoParcelExpected(f"return {unknown}")
    assert isinstance(await receipt(h, tracking_no="SF-NOBODY"), NoParcelExpected)
    assert await receipt(h, return_id=str(free.return_id)) == NoGoodsExpected(free.return_id, "refund_only")
    assert isinstance(await receipt(h, return_id=str(ask.return_id), lines=FITS[:1]), DoesNotFit)
    first, other = await asyncio.gather(
        receipt(h, return_id=str(ask.return_id), receipt_id="dock-1-A"),
        receipt(h, return_id=str(ask.return_id), receipt_id="dock-2-B", inspector_id="insp-2"),
    )
    assert isinstance(first, ReceiptAccepted) != isinstance(other, ReceiptAccepted)
    winner = first if isinstance(first, ReceiptAccepted) else other
    assert isinstance(other if winner is first else first, SecondReceipt)
    assert len(await h.published(ReturnReceived)) == 1
    again = await receipt(
        h,
        return_id=str(ask.return_id),
        receipt_id=winner.receipt_id,
        inspector_id="insp-wang" if winner.receipt_id == "dock-1-A" else "insp-2",
    )
    assert again == SameReceiptAgain(winner.receipt_id, ask.return_id)
    assert len(await h.published(ReturnReceived)) == 1
