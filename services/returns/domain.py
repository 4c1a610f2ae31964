"""Pure decisions of the returns service: what a valid request is, how platforms map onto it,
what status a return has after an event, and how each event reads on the timeline. No I/O."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator, model_validator

from contracts.events import ReturnKind

E164 = re.compile(r"^\+[1-9]\d{6,14}$")
ZERO_DECIMAL_CURRENCIES = frozenset({"JPY", "KRW", "VND", "CLP", "ISK", "HUF", "TWD"})


class WebhookCustomer(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1, max_length=128)
    phone: str
    locale: str = Field(default="zh-CN", pattern=r"^[a-z]{2,3}(-[A-Za-z]{2,4})?$")
    timezone: str = "Asia/Shanghai"

    @field_validator("phone")
    @classmethod
    def _phone(cls, v: str) -> str:
        if not E164.match(v):
            raise ValueError("phone must be E.164, e.g. +8613812345678")
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("unknown IANA timezone") from None
        return v


class WebhookLine(BaseModel):
    model_config = ConfigDict(extra="ignore")
    sku: str = Field(min_length=1, max_length=64)
    qty: StrictInt = Field(ge=1, le=10_000)
    unit_price: StrictInt = Field(ge=0, description="minor units")
    reason: str = Field(min_length=1, max_length=64)
    note: str | None = Field(default=None, max_length=2000)


class RequestedByCustomer(BaseModel):
    type: Literal["customer"]


class RequestedByAgent(BaseModel):
    type: Literal["agent"]
    agent_id: str = Field(min_length=1, max_length=128)


class ReturnWebhook(BaseModel):
    """Body of POST /v1/webhooks/generic/returns."""

    model_config = ConfigDict(extra="ignore")
    platform_return_id: str = Field(min_length=1, max_length=128)
    order_id: str = Field(min_length=1, max_length=128)
    shop_id: str = Field(min_length=1, max_length=128)
    kind: ReturnKind
    customer: WebhookCustomer
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    paid_total: StrictInt = Field(ge=0, description="minor units")
    lines: list[WebhookLine] = Field(min_length=1, max_length=200)
    tracking_no: str | None = Field(default=None, min_length=1, max_length=64)
    requested_by: Annotated[RequestedByCustomer | RequestedByAgent, Field(discriminator="type")] = RequestedByCustomer(
        type="customer"
    )
    requested_at: datetime

    @field_validator("requested_at")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("requested_at needs a timezone offset")
        return v

    @model_validator(mode="after")
    def _lines_within_paid(self) -> ReturnWebhook:
        worth = sum(line.qty * line.unit_price for line in self.lines)
        if worth > self.paid_total:
            raise ValueError(f"lines: worth {worth}, more than paid_total {self.paid_total}")
        return self


class ReturnEventWebhook(BaseModel):
    """Body of POST /v1/webhooks/{platform}/returns/{platform_return_id}/events."""

    model_config = ConfigDict(extra="ignore")
    shop_id: str = Field(min_length=1, max_length=128)
    type: Literal["tracking_registered", "cancelled"]
    tracking_no: str | None = Field(default=None, min_length=1, max_length=64)
    carrier: str | None = Field(default=None, max_length=64)
    reason: str | None = Field(default=None, max_length=500)

    @model_validator(mode="after")
    def _tracking(self) -> ReturnEventWebhook:
        if self.type == "tracking_registered" and not self.tracking_no:
            raise ValueError("tracking_no: required for tracking_registered")
        return self


# -- Shopify -------------------------------------------------------------------------------------


def to_minor_units(amount: Any, currency: str) -> int:
    try:
        value = Decimal(str(amount))
    except InvalidOperation:
        raise ValueError(f"not a decimal amount: {amount!r}") from None
    exponent = 0 if currency in ZERO_DECIMAL_CURRENCIES else 2
    minor = value.scaleb(exponent)
    if minor != minor.to_integral_value():
        raise ValueError(f"amount {amount} has more decimals than {currency} allows")
    return int(minor)


def map_shopify(payload: dict[str, Any], shop_domain: str | None) -> dict[str, Any]:
    """Map Shopify's `returns/request` webhook onto the generic body.

    Shopify's payload names the return, its order and the returned line items; prices and the
    customer come from the order, which the merchant's Shopify app includes as `order` fields
    (`currency`, `total_price`, `customer.phone`, `customer.locale`, line `sku` and `price`).
    Missing pieces are reported by the generic validation, naming the field.
    """
    order = payload.get("order") or {}
    currency = str(order.get("currency") or payload.get("currency") or "")
    customer = order.get("customer") or {}
    lines = []
    for item in payload.get("return_line_items") or []:
        li = (item.get("fulfillment_line_item") or {}).get("line_item") or item.get("line_item") or {}
        price = li.get("price")
        lines.append(
            {
                "sku": li.get("sku") or str(li.get("id") or ""),
                "qty": item.get("quantity"),
                "unit_price": to_minor_units(price, currency) if price is not None and currency else None,
                "reason": str(item.get("return_reason") or "other").lower(),
                "note": item.get("customer_note") or item.get("return_reason_note") or None,
            }
        )
    total = order.get("total_price")
    kind = "exchange" if payload.get("exchange_line_items") else "return_and_refund"
    return {
        "platform_return_id": str(payload.get("id") or ""),
        "order_id": str(order.get("id") or ""),
        "shop_id": shop_domain or str(payload.get("shop_id") or ""),
        "kind": kind,
        "customer": {
            "id": str(customer.get("id") or ""),
            "phone": customer.get("phone") or "",
            "locale": customer.get("locale") or "en",
            "timezone": customer.get("timezone") or "UTC",
        },
        "currency": currency,
        "paid_total": to_minor_units(total, currency) if total is not None and currency else None,
        "lines": lines,
        "tracking_no": (payload.get("reverse_fulfillment_order") or {}).get("tracking_number"),
        "requested_by": {"type": "customer"},
        "requested_at": payload.get("created_at") or datetime.now(UTC).isoformat(),
    }


# -- status ----------------------------------------------------------------------------------------

# Later steps outrank earlier ones, so events arriving out of order never move a return backwards.
STATUS_BY_EVENT: dict[str, tuple[str, int]] = {
    "return.requested": ("requested", 10),
    "return.tracking_registered": ("awaiting_parcel", 15),
    "parcel.scanned": ("in_transit", 20),
    "refund.escalated": ("under_review", 25),
    "return.received": ("received", 30),
    "refund.decided": ("refund_approved", 35),
    "refund.failed": ("refund_failed", 40),
    "refund.issued": ("refunded", 50),
    "return.cancelled": ("cancelled", 90),
}
REJECTED = ("rejected", 45)


def status_after(event_type: str, data: dict[str, Any]) -> tuple[str, int] | None:
    if event_type == "refund.decided" and data.get("decision") == "reject":
        return REJECTED
    return STATUS_BY_EVENT.get(event_type)


def can_cancel(status_rank: int) -> bool:
    return status_rank < STATUS_BY_EVENT["return.received"][1]


# -- timeline ----------------------------------------------------------------------------------------


def format_money(minor: int, currency: str) -> str:
    if currency in ZERO_DECIMAL_CURRENCIES:
        return f"{currency} {minor}"
    return f"{currency} {minor // 100}.{minor % 100:02d}"


def summarize(event_type: str, d: dict[str, Any]) -> str:
    money = lambda k="amount": format_money(int(d.get(k) or 0), str(d.get("currency") or ""))  # noqa: E731
    match event_type:
        case "return.requested":
            n = sum(int(line.get("qty", 0)) for line in d.get("lines", []))
            return f"Return requested ({d.get('kind')}): {n} item(s), {money('paid_total')} paid"
        case "return.cancelled":
            return f"Return cancelled by {d.get('cancelled_by', 'customer')}" + (
                f": {d['reason']}" if d.get("reason") else ""
            )
        case "return.tracking_registered":
            return f"Tracking number {d.get('tracking_no')} registered" + (
                f" ({d['carrier']})" if d.get("carrier") else ""
            )
        case "parcel.scanned":
            moving = " — parcel is on its way" if d.get("first_moving") else ""
            where = f" at {d['location']}" if d.get("location") else ""
            return f"Courier scan: {d.get('scan_code')}{where}{moving}"
        case "return.received":
            got = sum(int(line.get("qty_received", 0)) for line in d.get("lines", []))
            return f"Warehouse received {got} item(s) (receipt {d.get('receipt_id')})"
        case "inventory.attested":
            return f"Warehouse attested {d.get('movement')} of {d.get('quantity')} x {d.get('sku')}"
        case "inventory.verified":
            return f"Stock movement verified: {d.get('movement')} of {d.get('quantity')} x {d.get('sku')}"
        case "inventory.discrepancy":
            return f"Inventory discrepancy: {d.get('reason')} — {d.get('details')}"
        case "refund.decided":
            if d.get("decision") == "reject":
                return "Refund rejected" + (f" by {d['actor_id']}" if d.get("actor_id") else "")
            return f"Refund of {money()} approved ({d.get('basis')})"
        case "refund.escalated":
            role = str(d.get("required_role"))
            article = "an" if role[:1] in "aeiou" else "a"
            return f"Refund of {money()} needs {article} {role}'s approval"
        case "refund.issued":
            return f"Refund of {money()} paid ({d.get('basis')})"
        case "refund.failed":
            return f"Refund of {money()} failed: {d.get('error')}"
        case "refund.clawback_flagged":
            return f"Clawback of {money()} flagged for review: {d.get('reason')}"
        case "sms.sent":
            return f"SMS sent to customer: {d.get('step')}"
        case "sms.deferred":
            return f"SMS for {d.get('step')} deferred: {d.get('reason')}"
        case "sms.suppressed":
            return f"SMS for {d.get('step')} not sent: {d.get('reason')}"
        case "sms.failed":
            return f"SMS for {d.get('step')} failed: {d.get('error')}"
    return event_type


_DROP = {"customer", "phone_masked", "lines", "correlation_id", "event_id", "return_id", "type", "version"}


def analytics_payload(data: dict[str, Any]) -> dict[str, Any]:
    """What reports need from an event: its scalar facts, never the customer's contact details."""
    return {k: v for k, v in data.items() if k not in _DROP and not isinstance(v, dict | list)}


def top_movers(counts: dict[str, dict[str, int]], months: list[str], n: int = 3) -> list[dict[str, Any]]:
    """Reasons whose share of returns changed most from the previous month to the latest one."""
    if len(months) < 2:
        return []
    prev, last = months[-2], months[-1]
    total_prev = sum(counts.get(prev, {}).values()) or 1
    total_last = sum(counts.get(last, {}).values()) or 1
    reasons = set(counts.get(prev, {})) | set(counts.get(last, {}))
    moves: list[dict[str, Any]] = []
    for r in sorted(reasons):
        before = counts.get(prev, {}).get(r, 0) / total_prev
        now = counts.get(last, {}).get(r, 0) / total_last
        moves.append(
            {
                "reason": r,
                "share_before": round(before, 4),
                "share_now": round(now, 4),
                "change": round(now - before, 4),
            }
        )
    moves.sort(key=lambda m: -abs(m["change"]))
    return moves[:n]


def percentile(sorted_values: list[float], p: float) -> float | None:
    """Nearest-rank percentile of an ascending list (None when empty)."""
    if not sorted_values:
        return None
    rank = max(1, min(len(sorted_values), int(-(-p * len(sorted_values) // 100))))
    return sorted_values[rank - 1]


def parse_return_id(value: str) -> UUID | None:
    try:
        return UUID(value)
    except ValueError:
        return None
