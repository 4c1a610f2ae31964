"""The returns service's steps against a real PostgreSQL, without a broker: intake through the group
commit, a platform's tracking/cancel events, and the timeline consumer (entries, status, any order)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr

from contracts.events import (
    ParcelScanned,
    RefundBasis,
    RefundDecided,
    RefundIssued,
    ReplacementDelivered,
    ReplacementShipped,
    ReturnCancelled,
    ReturnReceived,
    ReturnRequested,
    ScanCode,
    TrackingRegistered,
)
from returnflow.links import link_token
from returnflow.settings import Settings
from services.returns import SPEC, ReturnsSettings, customer, handlers
from services.returns.handlers import AlreadyDone, Recorded, ReturnEvent, UnknownReturn
from services.returns.rules import Intake, Parcel, TooLateToCancel
from services.returns.schemas import ReturnEventWebhook, ReturnWebhook
from tests.handlers.harness import Harness, harness
from tests.webhooks import return_body

T0 = datetime.now(UTC) + timedelta(hours=1)  # after every return these tests create


@pytest.fixture
async def h(handler_settings: Settings) -> AsyncIterator[Harness]:
    async with harness(SPEC, handler_settings, ReturnsSettings(intake_batch_max=50, intake_batch_wait_ms=5)) as h:
        yield h


def webhook(delivery_id: str | None = None, **over: Any) -> Intake:
    body = ReturnWebhook.model_validate(return_body(**over))
    return Intake("generic", delivery_id or str(uuid.uuid4()), "generic", body, "corr-1")


async def new_return(h: Harness, **over: Any) -> uuid.UUID:
    result = await h.ctx.intake.submit(webhook(**over))
    assert result.created
    return uuid.UUID(str(result.return_id))


async def timeline(h: Harness, rid: uuid.UUID) -> list[str]:
    rows = await h.pool.fetch("SELECT type FROM timeline WHERE return_id = $1 ORDER BY occurred_at, id", rid)
    return [r["type"] for r in rows]


async def status(h: Harness, rid: uuid.UUID) -> str:
    found: str = await h.pool.fetchval("SELECT status FROM returns WHERE id = $1", rid)
    return found


def scanned(rid: uuid.UUID, at: datetime, scan_id: str = "s1") -> ParcelScanned:
    return ParcelScanned(
        occurred_at=at,
        return_id=rid,
        correlation_id="c",
        scan_id=scan_id,
        tracking_no="SF1",
        carrier="sf",
        scan_code=ScanCode.picked_up,
        scanned_at=at,
        first_moving=True,
    )


def issued(rid: uuid.UUID, at: datetime) -> RefundIssued:
    return RefundIssued(
        occurred_at=at,
        return_id=rid,
        correlation_id="c",
        refund_id="r1",
        amount=4000,
        currency="CNY",
        basis="early_scan",
        gateway_reference="g1",
    )


def received(rid: uuid.UUID) -> ReturnReceived:
    return ReturnReceived(
        occurred_at=T0,
        return_id=rid,
        correlation_id="c",
        receipt_id=f"rc-{rid}",
        warehouse_id="WH",
        inspector_id="insp",
        received_at=T0,
        lines=[],
    )


# -- intake -------------------------------------------------------------------------------------------


async def test_concurrent_webhooks_of_one_return_create_it_once_with_one_event(h: Harness) -> None:
    same = return_body()
    results = await asyncio.gather(
        *(h.ctx.intake.submit(webhook(f"d-{i}", **same)) for i in range(5)),
        h.ctx.intake.submit(webhook("d-0", **same)),  # the same delivery again
    )
    assert len({r.return_id for r in results}) == 1
    assert sum(r.created for r in results) == 1
    (requested,) = await h.published(ReturnRequested)
    assert requested.return_id == results[0].return_id and requested.correlation_id == "corr-1"
    assert await timeline(h, requested.return_id) == ["return.requested"]
    again = await h.ctx.intake.submit(webhook("d-3", **same))
    assert not again.created and again.return_id == results[0].return_id
    assert await h.published(ReturnRequested) == [requested]


# -- the timeline consumer ----------------------------------------------------------------------------


async def test_lifecycle_events_become_timeline_entries_and_advance_the_status(h: Harness) -> None:
    rid = await new_return(h)
    await h.apply("timeline", [scanned(rid, T0 + timedelta(minutes=1))])
    assert await status(h, rid) == "in_transit"
    await h.apply("timeline", [issued(rid, T0 + timedelta(minutes=5))])
    assert await status(h, rid) == "refunded"
    summaries = await h.pool.fetch("SELECT summary FROM timeline WHERE return_id = $1 ORDER BY occurred_at", rid)
    assert "Courier scan: picked_up — parcel is on its way" in [r["summary"] for r in summaries]


async def test_events_out_of_order_and_twice_never_move_a_return_backwards(h: Harness) -> None:
    rid = await new_return(h)
    scan = scanned(rid, T0 + timedelta(minutes=1))
    refund = issued(rid, T0 + timedelta(minutes=5))
    await h.apply("timeline", [refund, scan, scan])  # late scan, delivered twice in one batch
    await h.apply("timeline", [scan])  # and again later
    assert await status(h, rid) == "refunded"
    assert (await timeline(h, rid))[-2:] == ["parcel.scanned", "refund.issued"]  # in the order they happened
    assert (await timeline(h, rid)).count("parcel.scanned") == 1


async def test_a_rejected_refund_and_a_later_receipt_keep_the_highest_status(h: Harness) -> None:
    rid = await new_return(h)
    rejected = RefundDecided.model_validate(
        {
            "occurred_at": T0,
            "return_id": rid,
            "correlation_id": "c",
            "decision": "reject",
            "amount": 0,
            "currency": "CNY",
            "actor_id": "agent-1",
        }
    )
    await h.apply("timeline", [received(rid), rejected])
    assert await status(h, rid) == "rejected"


async def test_an_exchange_with_a_goodwill_grant_is_not_refunded_and_ends_with_its_replacement(h: Harness) -> None:
    rid = await new_return(h, kind="exchange")
    goodwill = issued(rid, T0 + timedelta(minutes=5)).model_copy(update={"basis": RefundBasis.agent_authority})
    await h.apply("timeline", [received(rid), goodwill])
    assert await status(h, rid) == "received"  # issue 16: it read `refunded`
    shipped = ReplacementShipped(
        occurred_at=T0 + timedelta(hours=1),
        return_id=rid,
        correlation_id="c",
        shipment_id="shp-1",
        warehouse_id="WH",
        carrier="sf",
        tracking_no="SFOUT1",
        lines=[{"sku": "SKU-1", "qty": 2}],
        shipped_by="packer-1",
        shipped_at=T0 + timedelta(hours=1),
    )
    delivered = ReplacementDelivered(
        occurred_at=T0 + timedelta(hours=30),
        return_id=rid,
        correlation_id="c",
        shipment_id="shp-1",
        carrier="sf",
        tracking_no="SFOUT1",
        scan_id="sf:x",
        delivered_at=T0 + timedelta(hours=30),
    )
    await h.apply("timeline", [delivered])
    await h.apply("timeline", [shipped])  # the delivery scan came first
    assert await status(h, rid) == "exchange_delivered"
    assert (await timeline(h, rid))[-2:] == ["exchange.replacement_shipped", "exchange.replacement_delivered"]


async def test_an_event_for_a_return_not_known_yet_is_kept_on_its_timeline(h: Harness) -> None:
    unknown = uuid.uuid4()
    await h.apply("timeline", [scanned(unknown, T0)])
    assert await timeline(h, unknown) == ["parcel.scanned"]


# -- a platform's tracking / cancel event ---------------------------------------------------------------


def platform_event(platform_return_id: str, delivery_id: str | None = None, **body: Any) -> ReturnEvent:
    return ReturnEvent(
        "generic-events",
        delivery_id or str(uuid.uuid4()),
        platform_return_id,
        ReturnEventWebhook.model_validate({"shop_id": "shop-1", **body}),
        "corr-2",
    )


async def test_tracking_then_cancel_are_published_and_on_the_timeline(h: Harness) -> None:
    rid = await new_return(h, platform_return_id="pr-tc")
    tracking = platform_event("pr-tc", "t-1", type="tracking_registered", tracking_no="SF9", carrier="sf")
    assert await handlers.record_return_event(h.ctx, tracking) == Recorded(rid, "return.tracking_registered")
    assert await handlers.record_return_event(h.ctx, tracking) == AlreadyDone(rid, "awaiting_parcel")
    assert await h.pool.fetchval("SELECT tracking_no FROM returns WHERE id = $1", rid) == "SF9"
    cancel = platform_event("pr-tc", type="cancelled", reason="changed my mind")
    assert await handlers.record_return_event(h.ctx, cancel) == Recorded(rid, "return.cancelled")
    assert await handlers.record_return_event(h.ctx, platform_event("pr-tc", type="cancelled")) == AlreadyDone(
        rid, "cancelled"
    )
    (registered,) = await h.published(TrackingRegistered)
    (cancelled,) = await h.published(ReturnCancelled)
    assert registered.tracking_no == "SF9" and cancelled.reason == "changed my mind"
    assert await timeline(h, rid) == ["return.requested", "return.tracking_registered", "return.cancelled"]
    assert await status(h, rid) == "cancelled"


async def test_cancel_after_receipt_is_refused_and_an_unknown_return_is_named(h: Harness) -> None:
    rid = await new_return(h, platform_return_id="pr-late")
    await h.apply("timeline", [received(rid)])
    cancel = platform_event("pr-late", type="cancelled")
    assert await handlers.record_return_event(h.ctx, cancel) == TooLateToCancel("received")
    assert await handlers.record_return_event(h.ctx, platform_event("nope", type="cancelled")) == UnknownReturn()
    assert await h.published(ReturnCancelled) == []


# -- customer links -----------------------------------------------------------------------------------


async def test_returns_accepted_before_links_existed_get_one_at_start(handler_settings: Settings) -> None:
    own = ReturnsSettings(intake_batch_max=50, intake_batch_wait_ms=5)
    without = handler_settings.model_copy(update={"customer_link_secret": None})
    async with harness(SPEC, without, own) as h:
        earlier = [await new_return(h) for _ in range(3)]
        assert await h.pool.fetchval("SELECT count(*) FROM returns WHERE link_digest IS NULL") == 3
    with_secret = handler_settings.model_copy(update={"customer_link_secret": SecretStr("a-link-secret")})
    async with harness(SPEC, with_secret, own) as h:
        assert await handlers.backfill_link_digests(h.ctx, chunk=2) == 3
        for rid in earlier:
            digest = h.ctx.link_digest(rid)
            assert digest and await h.pool.fetchval("SELECT id FROM returns WHERE link_digest = $1", digest) == rid
        assert await handlers.backfill_link_digests(h.ctx) == 0  # once only


async def test_an_exchange_page_shows_its_outgoing_parcel(handler_settings: Settings) -> None:
    secret = "a-link-secret"
    with_secret = handler_settings.model_copy(update={"customer_link_secret": SecretStr(secret)})
    async with harness(SPEC, with_secret, ReturnsSettings(intake_batch_max=50, intake_batch_wait_ms=5)) as h:
        rid = await new_return(h, kind="exchange")
        token = link_token(secret.encode(), rid)
        await h.apply("timeline", [received(rid)])
        before = await handlers.customer_page(h.ctx, token)
        assert isinstance(before, handlers.CustomerPage) and before.progress.replacement is None
        assert "replacement-parcel" not in customer.render_page(h.ctx, token, before)
        shipped = ReplacementShipped(
            occurred_at=T0 + timedelta(hours=1),
            return_id=rid,
            correlation_id="c",
            shipment_id="shp-9",
            warehouse_id="WH",
            carrier="sf",
            tracking_no="SFOUT9",
            lines=[{"sku": "SKU-1", "qty": 2}],
            shipped_by="wh-zhao",
            shipped_at=T0 + timedelta(hours=1),
        )
        await h.apply("timeline", [shipped])
        page = await handlers.customer_page(h.ctx, token)
        assert isinstance(page, handlers.CustomerPage)
        assert page.progress.replacement == Parcel("sf", "SFOUT9")
        assert page.next_action == "replacement_on_its_way"
        html = customer.render_page(h.ctx, token, page)
        assert 'id="replacement-parcel"' in html and "SFOUT9" in html
        assert "SF Express" in html or "顺丰速运" in html  # the courier's name, not its slug
