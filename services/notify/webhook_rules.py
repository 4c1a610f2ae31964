"""Pure decisions of the merchant webhooks: which lifecycle event a merchant hears of and as what, the payload
it receives, which of a shop's endpoints get it, and what becomes of a delivery its endpoint did not take.
No I/O.

The payload (version 1), the same bytes on every attempt:

    {"type": "refund.paid", "version": 1, "timestamp": "2026-12-02T09:30:00Z",
     "data": {"shop_id", "return_id", "platform_return_id", "order_id", "kind", "status", ...the event's facts}}

`status` names what the event means for the return, in the returns service's status words (`requested`,
`cancelled`, `received`, `rejected`, `refunded`, `refund_failed`, `under_review`, `awaiting_stock`,
`clawback_flagged`, `discrepancy`, `exchange_shipped`); events may arrive in any order, so it is the news
of this event, not necessarily the return's status now. Money is in minor units with its currency. A
customer's phone number is never in it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, get_args
from uuid import UUID

import orjson

from contracts.events import (
    ClawbackFlagged,
    DiscrepancyFound,
    ExchangeOutOfStock,
    Message,
    RefundDecided,
    RefundEscalated,
    RefundFailed,
    RefundIssued,
    ReplacementShipped,
    ReturnCancelled,
    ReturnReceived,
    ReturnRequested,
)
from returnflow.shops import MerchantEvent, Shop, WebhookEndpoint

PAYLOAD_VERSION = 1
MERCHANT_EVENTS: tuple[str, ...] = get_args(MerchantEvent)
ERROR_CHARS = 300  # what is kept of an endpoint's answer or a connection error


@dataclass(frozen=True)
class News:
    """A lifecycle event as a merchant hears of it: its type, and the facts beyond the return's own."""

    event_id: UUID
    return_id: UUID
    type: str  # a MerchantEvent
    occurred_at: datetime
    correlation_id: str
    facts: dict[str, Any]


@dataclass(frozen=True)
class ReturnFacts:
    """What notify knows of the return (from its return.requested)."""

    shop_id: str
    platform_return_id: str | None
    order_id: str | None
    kind: str | None


def _money(amount: int, currency: str) -> dict[str, Any]:
    return {"amount": amount, "currency": currency}


def _requested(e: ReturnRequested) -> tuple[str, dict[str, Any]]:
    requested = sum(line.qty * line.unit_price for line in e.lines)
    lines = [
        {"sku": line.sku, "qty": line.qty, "unit_price": line.unit_price, "reason": line.reason} for line in e.lines
    ]
    facts = {"status": "requested", "paid_total": e.paid_total, "lines": lines, **_money(requested, e.currency)}
    return "return.requested", facts


def _received(e: ReturnReceived) -> tuple[str, dict[str, Any]]:
    lines = [
        {"sku": x.sku, "qty_requested": x.qty_requested, "qty_received": x.qty_received, "condition": x.condition}
        for x in e.lines
    ]
    return "return.received", {"status": "received", "receipt_id": e.receipt_id, "lines": lines}


def news_of(e: Message) -> tuple[str, dict[str, Any]] | None:
    """The merchant event a lifecycle event is, with its facts; None for what a merchant is not told."""
    match e:
        case ReturnRequested():
            return _requested(e)
        case ReturnCancelled():
            return "return.cancelled", {"status": "cancelled", "reason": e.reason, "cancelled_by": e.cancelled_by}
        case ReturnReceived():
            return _received(e)
        case RefundDecided(decision="reject"):
            return "return.rejected", {"status": "rejected", "note": e.note}
        case RefundIssued():
            facts = {"status": "refunded", "refund_id": e.refund_id, "basis": e.basis, **_money(e.amount, e.currency)}
            return "refund.paid", facts
        case RefundFailed():
            facts = {"status": "refund_failed", "refund_id": e.refund_id, "error": e.error, "retryable": e.retryable}
            return "refund.failed", {**facts, **_money(e.amount, e.currency)}
        case RefundEscalated():
            facts = {"status": "under_review", "reason": "escalated", "required_role": e.required_role}
            return "return.needs_person", {**facts, "detail": e.reason, **_money(e.amount, e.currency)}
        case ClawbackFlagged():
            facts = {"status": "clawback_flagged", "reason": "clawback", "detail": e.reason}
            return "return.needs_person", {**facts, "refund_id": e.refund_id, **_money(e.amount, e.currency)}
        case ExchangeOutOfStock():
            facts = {"status": "awaiting_stock", "reason": "out_of_stock", "skus": list(e.skus)}
            return "return.needs_person", facts
        case DiscrepancyFound():
            facts = {"status": "discrepancy", "reason": e.reason, "sku": e.sku, "movement": e.movement}
            return "return.discrepancy", {**facts, "discrepancy_id": e.discrepancy_id, "detail": e.details}
        case ReplacementShipped():
            lines = [{"sku": x.sku, "qty": x.qty} for x in e.lines]
            facts = {"status": "exchange_shipped", "carrier": e.carrier, "tracking_no": e.tracking_no}
            return "exchange.replacement_shipped", {**facts, "lines": lines}
    return None


def merchant_news(events: Sequence[Message]) -> list[News]:
    """The events of a batch a merchant hears of."""
    out: list[News] = []
    for e in events:
        found = news_of(e)
        if found is not None:
            kind, facts = found
            out.append(News(e.event_id, e.return_id, kind, e.occurred_at, e.correlation_id, facts))
    return out


def any_endpoints(shops: Mapping[str, Shop]) -> bool:
    """Does any shop listen at all? When none does, the consumer records nothing (the SMS path stays as fast)."""
    return any(shop.webhooks for shop in shops.values())


def subscribed(shop: Shop | None, event_type: str) -> list[WebhookEndpoint]:
    """The shop's endpoints that take this type (an endpoint without `events` takes them all)."""
    if shop is None:
        return []
    return [w for w in shop.webhooks if w.events is None or event_type in w.events]


def endpoint(shop: Shop | None, url: str) -> WebhookEndpoint | None:
    """The endpoint a delivery goes to, as the shops file now says (its secret may have been rotated)."""
    return next((w for w in shop.webhooks if w.url == url), None) if shop is not None else None


def webhook_id(event_id: UUID) -> str:
    """The delivery's `webhook-id`: the same on every attempt (the merchant dedupes retries by it) and on each
    of the shop's endpoints, one per lifecycle event."""
    return f"msg_{event_id.hex}"


def payload(news: News, facts: ReturnFacts) -> bytes:
    """The JSON body of a delivery (see the module's docstring)."""
    at = news.occurred_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    data: dict[str, Any] = {
        "shop_id": facts.shop_id,
        "return_id": str(news.return_id),
        "platform_return_id": facts.platform_return_id,
        "order_id": facts.order_id,
        "kind": facts.kind,
        **news.facts,
    }
    return orjson.dumps({"type": news.type, "version": PAYLOAD_VERSION, "timestamp": at, "data": data})


# -- a delivery's attempts ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivered:
    pass


@dataclass(frozen=True)
class RetryAt:
    at: datetime


@dataclass(frozen=True)
class GiveUp:
    reason: str


def accepted(status: int | None) -> bool:
    """The endpoint took it: any 2xx. Everything else (3xx too: redirects are not followed, as the Standard
    Webhooks senders do) is tried again."""
    return status is not None and 200 <= status < 300


def after_attempt(
    status: int | None, error: str, attempts: int, now: datetime, give_up_at: datetime, delay_s: float
) -> Delivered | RetryAt | GiveUp:
    """What becomes of a delivery after an attempt: delivered; tried again after `delay_s` (the backoff
    for this attempt); or, when that would fall after `give_up_at`, failed for good."""
    if accepted(status):
        return Delivered()
    at = now + timedelta(seconds=delay_s)
    if at > give_up_at:
        return GiveUp(f"gave up after {attempts} attempts: {error}"[:ERROR_CHARS])
    return RetryAt(at)


def describe_answer(status: int, body: bytes) -> str:
    """The error kept for an answer that is not a 2xx: its status and the start of its body."""
    text = body[:200].decode(errors="replace").strip()
    return f"HTTP {status}" + (f": {text}" if text else "")
