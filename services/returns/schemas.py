"""What the platforms send: the bodies of the returns webhooks (validated at the edge, naming each bad
field) and how a Shopify payload maps onto the generic body. Pure: no I/O."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator, model_validator

from contracts.events import ReturnKind

E164 = re.compile(r"^\+[1-9]\d{6,14}$")
ZERO_DECIMAL_CURRENCIES = frozenset({"JPY", "KRW", "VND", "CLP", "ISK", "HUF", "TWD"})


class WebhookCustomer(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1, max_length=128)
    phone: str
    # Left out: the shop's default (shops file locale / timezone), else zh-CN and Asia/Shanghai.
    locale: str | None = Field(default=None, pattern=r"^[a-z]{2,3}(-[A-Za-z]{2,4})?$")
    timezone: str | None = None

    @field_validator("phone")
    @classmethod
    def _phone(cls, v: str) -> str:
        if not E164.match(v):
            raise ValueError("phone must be E.164, e.g. +8613812345678")
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str | None) -> str | None:
        if v is None:
            return v
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
    replacement_sku: str | None = Field(
        default=None, min_length=1, max_length=64, description="exchange: the SKU to send instead (none: the same SKU)"
    )


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
    shop_name: str | None = Field(
        default=None, min_length=1, max_length=64, description="the shop's display name (the SMS signature)"
    )
    kind: ReturnKind
    customer: WebhookCustomer
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    paid_total: StrictInt = Field(ge=0, description="minor units")
    lines: list[WebhookLine] = Field(min_length=1, max_length=200)
    tracking_no: str | None = Field(default=None, min_length=1, max_length=64)
    payment_reference: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        description="the order's payment at the refund provider (Stripe pi_… / ch_…); refunds go back to it",
    )
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
    total = order.get("total_price")
    return {
        "platform_return_id": str(payload.get("id") or ""),
        "order_id": str(order.get("id") or ""),
        "shop_id": shop_domain or str(payload.get("shop_id") or ""),
        "kind": "exchange" if payload.get("exchange_line_items") else "return_and_refund",
        "customer": {
            "id": str(customer.get("id") or ""),
            "phone": customer.get("phone") or "",
            "locale": customer.get("locale") or "en",
            "timezone": customer.get("timezone") or "UTC",
        },
        "currency": currency,
        "paid_total": to_minor_units(total, currency) if total is not None and currency else None,
        "lines": [_shopify_line(item, currency) for item in payload.get("return_line_items") or []],
        "tracking_no": (payload.get("reverse_fulfillment_order") or {}).get("tracking_number"),
        "requested_by": {"type": "customer"},
        "requested_at": payload.get("created_at") or datetime.now(UTC).isoformat(),
    }


def _shopify_line(item: dict[str, Any], currency: str) -> dict[str, Any]:
    li = (item.get("fulfillment_line_item") or {}).get("line_item") or item.get("line_item") or {}
    price = li.get("price")
    return {
        "sku": li.get("sku") or str(li.get("id") or ""),
        "qty": item.get("quantity"),
        "unit_price": to_minor_units(price, currency) if price is not None and currency else None,
        "reason": str(item.get("return_reason") or "other").lower(),
        "note": item.get("customer_note") or item.get("return_reason_note") or None,
    }
