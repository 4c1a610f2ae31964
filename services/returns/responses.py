"""The bodies the returns service answers (its OpenAPI response models). The routes build them as dicts
from the views; these models say what a client may rely on."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

RETURN_ID = "0b9e7f3c-59a4-4a0e-9a52-3f1f6f0c2d11"


def example(value: dict[str, Any]) -> ConfigDict:
    return ConfigDict(json_schema_extra={"example": value})


class Accepted(BaseModel):
    """A return request accepted (202), or the same delivery again (200, duplicate)."""

    model_config = example(
        {"return_id": RETURN_ID, "status": "requested", "timeline_url": f"/v1/returns/{RETURN_ID}/timeline"}
        | {"duplicate": False}
    )
    return_id: UUID
    status: str
    timeline_url: str
    duplicate: bool


class EventRecorded(BaseModel):
    model_config = example({"return_id": RETURN_ID, "event": "returns.cancelled", "duplicate": False})
    return_id: UUID
    event: str
    duplicate: bool


class EventAlreadyRecorded(BaseModel):
    model_config = example({"return_id": RETURN_ID, "status": "cancelled", "duplicate": True})
    return_id: UUID
    status: str
    duplicate: bool


class ReturnLine(BaseModel):
    line_no: int
    sku: str
    qty: int
    unit_price: int = Field(description="minor units")
    reason: str
    note: str | None


class ReturnView(BaseModel):
    """A return as recorded (the customer's phone masked), with its lines."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "example": {
                "id": RETURN_ID,
                "shop_id": "demo-shop",
                "platform": "generic",
                "platform_return_id": "pr-1001",
                "order_id": "order-77",
                "kind": "return_and_refund",
                "status": "requested",
                "currency": "CNY",
                "paid_total": 5000,
                "customer": {"id": "c-1", "phone": "+86138****5678", "locale": "zh-CN"},
                "requested_by": {"type": "customer"},
                "tracking_no": None,
                "requested_at": "2026-11-20T10:00:00+08:00",
                "correlation_id": "6f1c…",
                "created_at": "2026-11-20T10:00:01+08:00",
                "updated_at": "2026-11-20T10:00:01+08:00",
                "lines": [
                    {"line_no": 1, "sku": "SKU-1", "qty": 1, "unit_price": 5000, "reason": "damaged", "note": None}
                ],
                "timeline_url": f"/v1/returns/{RETURN_ID}/timeline",
            }
        },
    )
    id: UUID
    shop_id: str
    platform: str
    platform_return_id: str
    order_id: str
    kind: str
    status: str
    currency: str
    paid_total: int
    customer: dict[str, Any]
    requested_by: dict[str, Any]
    tracking_no: str | None
    requested_at: datetime
    correlation_id: str
    created_at: datetime
    updated_at: datetime
    lines: list[ReturnLine]
    timeline_url: str


class TimelineEntry(BaseModel):
    occurred_at: datetime
    type: str
    summary: str


class Timeline(BaseModel):
    model_config = example(
        {
            "return_id": RETURN_ID,
            "status": "received",
            "entries": [
                {"occurred_at": "2026-11-20T10:00:00+08:00", "type": "returns.requested", "summary": "Requested"}
            ],
        }
    )
    return_id: UUID
    status: str
    entries: list[TimelineEntry]


class Report(BaseModel):
    """An after-sales report: flat `rows` (as in the CSV), plus what its chart needs."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "example": {
                "report": "reasons",
                "months": ["2026-10", "2026-11"],
                "rows": [{"month": "2026-11", "reason": "damaged", "count": 12, "share": 0.4}],
            }
        },
    )
    report: str
    rows: list[dict[str, Any]]


class FoundReturn(BaseModel):
    return_id: UUID
    shop_id: str
    platform: str
    platform_return_id: str
    order_id: str
    kind: str
    status: str
    currency: str
    paid_total: int = Field(description="minor units")
    phone: str = Field(description="the customer's phone, masked")
    tracking_no: str | None
    requested_at: datetime
    created_at: datetime


class SearchCounts(BaseModel):
    total: int = Field(description="returns matching the search (every page)")


class FoundReturns(BaseModel):
    """Returns matching a search, oldest first, a page at a time."""

    model_config = ConfigDict(
        json_schema_extra={"example": {"returns": [], "next_cursor": None, "counts": {"total": 0}}}
    )
    returns: list[FoundReturn]
    next_cursor: str | None = Field(description="`cursor` of the next page; null on the last page")
    counts: SearchCounts
