"""The merchant webhooks' pure rules (services/notify/webhook_rules.py): what each lifecycle event is told as,
which endpoints take it, and what an attempt leads to — a retry never after the delivery's deadline, a 2xx
always the end."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import orjson
from hypothesis import given
from hypothesis import strategies as st

from contracts.events import (
    ClawbackFlagged,
    DiscrepancyFound,
    ExchangeOutOfStock,
    RefundDecided,
    ReplacementLine,
    ReplacementShipped,
    ReturnCancelled,
)
from returnflow.shops import Shop, WebhookEndpoint
from services.notify.webhook_rules import (
    MERCHANT_EVENTS,
    Delivered,
    GiveUp,
    RetryAt,
    ReturnFacts,
    after_attempt,
    merchant_news,
    payload,
    subscribed,
)
from tests.integration.notify_support import escalated, issued, received, requested, scanned

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
RID = uuid.uuid4()


def base() -> dict:
    return {"occurred_at": NOW, "return_id": RID, "correlation_id": "c-1"}


def test_each_status_change_is_told_and_the_rest_is_not() -> None:
    events = [
        requested(rid=RID),
        scanned(RID),  # the parcel moving is the customer's news (SMS), not a merchant event
        received(RID),
        issued(RID),
        escalated(RID),
        ReturnCancelled(**base()),
        RefundDecided(**base(), decision="reject", amount=0, currency="CNY"),
        RefundDecided(**base(), decision="refund", amount=100, currency="CNY"),  # refund.paid follows
        ClawbackFlagged(**base(), amount=100, currency="CNY", receipt_id="r1", reason="missing"),
        ExchangeOutOfStock(**base(), skus=["SKU-1"], warehouse_id="wh", reported_by="w1"),
        DiscrepancyFound(**base(), discrepancy_id="d1", reason="quantity_mismatch", details="2 vs 1"),
        ReplacementShipped(
            **base(),
            shipment_id="s1",
            warehouse_id="wh",
            carrier="sf",
            tracking_no="SF9",
            lines=[ReplacementLine(sku="SKU-2", qty=1)],
            shipped_by="w1",
            shipped_at=NOW,
        ),
    ]
    told = [(n.type, n.facts["status"]) for n in merchant_news(events)]
    assert told == [
        ("return.requested", "requested"),
        ("return.received", "received"),
        ("refund.paid", "refunded"),
        ("return.needs_person", "under_review"),
        ("return.cancelled", "cancelled"),
        ("return.rejected", "rejected"),
        ("return.needs_person", "clawback_flagged"),
        ("return.needs_person", "awaiting_stock"),
        ("return.discrepancy", "discrepancy"),
        ("exchange.replacement_shipped", "exchange_shipped"),
    ]
    assert {t for t, _ in told} <= set(MERCHANT_EVENTS)


def test_the_payload_carries_the_return_and_money_but_never_the_phone() -> None:
    req = requested(rid=RID, phone="+8613899990000")
    (news,) = merchant_news([req])
    body = payload(news, ReturnFacts("shop-1", req.platform_return_id, req.order_id, "return_and_refund"))
    data = orjson.loads(body)
    assert data["type"] == "return.requested" and data["version"] == 1
    assert data["data"]["amount"] == 5000 and data["data"]["currency"] == "CNY" and data["data"]["paid_total"] == 5000
    assert data["data"]["order_id"] == req.order_id and data["data"]["shop_id"] == "shop-1"
    assert b"13899990000" not in body and b"phone" not in body


def test_an_endpoint_without_events_takes_them_all() -> None:
    shop = Shop(
        webhooks=[
            WebhookEndpoint(url="https://a", secret="s"),
            WebhookEndpoint(url="https://b", secret="s", events=["refund.paid"]),
        ]
    )
    assert [w.url for w in subscribed(shop, "refund.paid")] == ["https://a", "https://b"]
    assert [w.url for w in subscribed(shop, "return.received")] == ["https://a"]
    assert subscribed(None, "refund.paid") == []


statuses = st.one_of(st.none(), st.integers(100, 599))


@given(status=statuses, attempts=st.integers(1, 60), delay=st.floats(0.01, 7200), left=st.floats(-100, 100_000))
def test_an_attempt_ends_delivered_retried_before_the_deadline_or_given_up(
    status: int | None, attempts: int, delay: float, left: float
) -> None:
    give_up_at = NOW + timedelta(seconds=left)
    outcome = after_attempt(status, "HTTP 500", attempts, NOW, give_up_at, delay)
    if status is not None and 200 <= status < 300:
        assert outcome == Delivered()
    elif NOW + timedelta(seconds=delay) > give_up_at:
        assert isinstance(outcome, GiveUp) and outcome.reason.startswith(f"gave up after {attempts} attempts")
    else:
        assert isinstance(outcome, RetryAt) and NOW < outcome.at <= give_up_at
