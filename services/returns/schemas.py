"""What the platforms send: the bodies of the returns webhooks (validated at the edge, naming each bad
field) and how a Shopify returns/request payload, completed with its order, maps onto the generic body.
Pure: no I/O."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator, model_validator

from contracts.events import ReturnKind
from returnflow.phones import normalize_phone

E164 = re.compile(r"^\+[1-9]\d{6,14}$")
ZERO_DECIMAL_CURRENCIES = frozenset({"JPY", "KRW", "VND", "CLP", "ISK", "HUF", "TWD"})


class WebhookCustomer(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1, max_length=128)
    # None (or left out, or ""): the customer has no phone; the return is accepted and notify skips the
    # SMS steps (reason `no_phone`).
    phone: str | None = None
    # Left out: the shop's default (shops file locale / timezone), else zh-CN and Asia/Shanghai.
    locale: str | None = Field(default=None, pattern=r"^[a-z]{2,3}(-[A-Za-z]{2,4})?$")
    timezone: str | None = None

    @field_validator("phone", mode="before")
    @classmethod
    def _no_phone(cls, v: Any) -> Any:
        return None if v == "" else v

    @field_validator("phone")
    @classmethod
    def _phone(cls, v: str | None) -> str | None:
        if v is not None and not E164.match(v):
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


SHOPIFY_LOCALE = re.compile(r"^[a-z]{2,3}(-[A-Za-z]{2,4})?$")


@dataclass(frozen=True)
class ShopifyOrderLine:
    sku: str
    unit_price: int  # minor units: what the customer paid for one unit, after every discount


@dataclass(frozen=True)
class ShopifyOrder:
    """What a return needs of a Shopify order, read through the Admin GraphQL API (services/returns/shopify.py)."""

    gid: str  # gid://shopify/Order/450789469
    legacy_id: str  # 450789469
    name: str | None  # "#1001"
    currency: str  # the presentment currency: the one the customer paid in
    paid_total: int  # minor units
    lines: Mapping[str, ShopifyOrderLine]  # by the line item's legacy id
    customer_id: str | None
    phone: str | None  # as Shopify holds it; E.164 or nothing is used
    locale: str | None  # the order's customer locale, else the customer's
    timezone: str | None  # the shop's IANA time zone


@dataclass(frozen=True)
class ShopifyReturnRef:
    """What a returns/* webhook names: the return, and (returns/request) its order and returned lines."""

    return_id: str  # the Return's legacy id, e.g. "9001"
    order_gid: str | None
    status: str | None


def obj(value: Any) -> dict[str, Any]:
    """A JSON object of a payload, or {} for anything else (absent, null, a list)."""
    return value if isinstance(value, dict) else {}


def legacy_id(value: Any) -> str | None:
    """The numeric id of a Shopify object from its legacy id (123) or its GraphQL id (gid://shopify/X/123)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value) if value > 0 else None
    tail = str(value).split("?")[0].rstrip("/").rsplit("/", 1)[-1]
    return tail if tail.isdigit() and int(tail) > 0 else None


def shopify_return_ref(payload: dict[str, Any], topic: str) -> ShopifyReturnRef:
    """The return (and for returns/request its order) a returns/* webhook names; ValueError naming the field."""
    return_id = legacy_id(payload.get("id")) or legacy_id(payload.get("admin_graphql_api_id"))
    if return_id is None:
        raise ValueError("id: the Return's id is missing or not a Shopify id")
    order = obj(payload.get("order"))
    order_id = legacy_id(order.get("admin_graphql_api_id")) or legacy_id(order.get("id"))
    order_id = order_id or legacy_id(payload.get("order_id"))
    if topic == "returns/request" and order_id is None:
        raise ValueError("order.id: the order of the return is missing or not a Shopify id")
    status = payload.get("status")
    return ShopifyReturnRef(
        return_id, f"gid://shopify/Order/{order_id}" if order_id else None, str(status) if status else None
    )


def shopify_locale(*candidates: str | None, default: str = "en") -> str:
    """The first usable locale: Shopify's `en`, `zh-CN`, `pt-BR` as they are; a longer tag (`zh-Hant-TW`)
    cut to its language; anything else skipped."""
    for c in candidates:
        if not c:
            continue
        c = c.strip().replace("_", "-")
        if SHOPIFY_LOCALE.match(c):
            return c
        language = c.split("-")[0].lower()
        if SHOPIFY_LOCALE.match(language):
            return language
    return default


def shopify_timezone(*candidates: str | None) -> str:
    for c in candidates:
        if not c:
            continue
        try:
            ZoneInfo(c)
        except (ZoneInfoNotFoundError, ValueError):
            continue
        return c
    return "UTC"


def e164_or_none(phone: str | None) -> str | None:
    """Shopify keeps phone numbers in E.164; a number that is not is treated as no number (no SMS) rather
    than refusing the return."""
    if not phone or not phone.strip().startswith("+"):
        return None
    normalized = normalize_phone(phone)
    return normalized if normalized and E164.match(normalized) else None


def map_shopify(
    payload: dict[str, Any],
    order: ShopifyOrder,
    shop_id: str,
    locale: str | None = None,
    timezone: str | None = None,
) -> dict[str, Any]:
    """Shopify's `returns/request` webhook, completed with its order (read through the Admin API), as the
    generic return body. `locale`: the shop's default (shops file) for a customer Shopify knows none for;
    `timezone`: the shops file's, which wins over the shop's time zone in Shopify.

    The payload names the return and, per returned line, its quantity, reason and the order's line item
    (`return_line_items[].fulfillment_line_item.line_item.id`); prices, currency and the customer come
    from the order. A line item that is not on the order is named in a ValueError.
    """
    ref = shopify_return_ref(payload, "returns/request")
    items = payload.get("return_line_items")
    if not isinstance(items, list) or not items:
        raise ValueError("return_line_items: a return needs at least one returned line")
    return {
        "platform_return_id": ref.return_id,
        "order_id": order.legacy_id,
        "shop_id": shop_id,
        "kind": "exchange" if payload.get("exchange_line_items") else "return_and_refund",
        "customer": {
            "id": order.customer_id or f"guest-order-{order.legacy_id}",
            "phone": e164_or_none(order.phone),
            "locale": shopify_locale(order.locale, locale),
            "timezone": shopify_timezone(timezone, order.timezone),
        },
        "currency": order.currency,
        "paid_total": order.paid_total,
        "lines": [_shopify_line(i, item, order) for i, item in enumerate(items)],
        "payment_reference": order.gid,
        "requested_by": {"type": "customer"},
        "requested_at": payload.get("created_at") or datetime.now(UTC).isoformat(),
    }


def _shopify_line(i: int, item: Any, order: ShopifyOrder) -> dict[str, Any]:
    where = f"return_line_items.{i}"
    if not isinstance(item, dict):
        raise ValueError(f"{where}: not an object")
    li = obj(obj(item.get("fulfillment_line_item")).get("line_item"))
    li_id = legacy_id(li.get("admin_graphql_api_id")) or legacy_id(li.get("id"))
    if li_id is None:
        raise ValueError(f"{where}.fulfillment_line_item.line_item.id: missing")
    line = order.lines.get(li_id)
    if line is None:
        raise ValueError(f"{where}.fulfillment_line_item.line_item.id: line item {li_id} is not on order {order.name}")
    return {
        "sku": line.sku,
        "qty": item.get("quantity"),
        "unit_price": line.unit_price,
        "reason": str(item.get("return_reason") or "other").lower()[:64],
        "note": item.get("customer_note") or item.get("return_reason_note") or None,
    }
