"""notify's steps of an exchange against a real PostgreSQL, without a broker: "replacement on its way"
with the outgoing parcel's tracking number, "out of stock" and "refund instead" — once per step, in the
customer's language, under the same rules as every care message (a goodwill grant is not a conversion)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from contracts.events import ExchangeOutOfStock, RefundBasis, RefundDecided, ReplacementShipped, SmsSent
from returnflow.settings import Settings
from services.notify import SPEC
from tests.handlers.harness import harness
from tests.handlers.test_notify_handlers import lines, notify, send_due, statuses
from tests.integration.notify_support import escalated, received, requested


def shipped(rid: uuid.UUID) -> ReplacementShipped:
    return ReplacementShipped(
        occurred_at=datetime.now(UTC),
        return_id=rid,
        correlation_id="corr-ship",
        shipment_id="pack-1",
        warehouse_id="WH",
        carrier="sf",
        tracking_no="SFOUT12345",
        lines=[{"sku": "SHOE-42", "qty": 1}],
        shipped_by="packer-li",
        shipped_at=datetime.now(UTC),
    )


def out_of_stock(rid: uuid.UUID) -> ExchangeOutOfStock:
    at = datetime.now(UTC)
    return ExchangeOutOfStock(
        occurred_at=at, return_id=rid, correlation_id="c", skus=["SHOE-42"], warehouse_id="WH", reported_by="p"
    )


def decided(rid: uuid.UUID, basis: RefundBasis) -> RefundDecided:
    return RefundDecided(
        occurred_at=datetime.now(UTC),
        return_id=rid,
        correlation_id="c",
        decision="refund",
        amount=6000,
        currency="CNY",
        basis=basis,
        actor_id="sam",
    )


async def test_the_replacement_on_its_way_names_the_outgoing_tracking_number_once(handler_settings: Settings) -> None:
    req = requested(locale="es", kind="exchange")
    rid = req.return_id
    async with harness(SPEC, handler_settings, notify()) as h:
        await h.apply("lifecycle", [req, received(rid), shipped(rid), shipped(rid)])
        await h.apply("lifecycle", [shipped(rid), decided(rid, RefundBasis.agent_authority)])  # goodwill: no text
        await send_due(h)
        assert await statuses(h, rid) == {"requested": "sent", "received": "sent", "replacement_shipped": "sent"}
        (text,) = [x["text"] for x in lines(h, rid) if x["step"] == "replacement_shipped"]
        assert "SFOUT12345" in text and text.startswith("Tu cambio del pedido")
        assert [e.step for e in await h.published(SmsSent)].count("replacement_shipped") == 1


async def test_out_of_stock_then_refund_instead_are_told_in_chinese(handler_settings: Settings) -> None:
    req = requested(locale="zh-CN", kind="exchange")
    rid = req.return_id
    async with harness(SPEC, handler_settings, notify()) as h:
        review = escalated(rid).model_copy(update={"basis": RefundBasis.exchange_conversion})
        await h.apply("lifecycle", [req, received(rid), out_of_stock(rid), review])  # no "refund under review"
        await send_due(h)
        await h.apply("lifecycle", [decided(rid, RefundBasis.exchange_conversion), out_of_stock(rid)])
        await send_due(h)
        got = {x["step"]: x["text"] for x in lines(h, rid)}
    assert "缺货" in got["replacement_delayed"]
    assert "改为退款¥60.00" in got["refund_instead"]
    assert list(got) == ["requested", "received", "replacement_delayed", "refund_instead"]
