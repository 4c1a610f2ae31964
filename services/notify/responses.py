"""The bodies the notify service answers (its OpenAPI response models), and what its webhooks take."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

RETURN_ID = "0b9e7f3c-59a4-4a0e-9a52-3f1f6f0c2d11"


class Sms(BaseModel):
    """One message of a return: sent, waiting, or not sent and why (the number masked)."""

    step: str
    kind: str
    status: str
    due_at: datetime
    sent_at: datetime | None
    reason: str | None
    locale: str | None
    body: str | None
    provider: str | None
    provider_message_id: str | None
    attempts: int
    deferrals: int
    last_error: str | None
    delivery_status: str | None
    params: dict[str, Any]
    phone_masked: str


class SmsOfReturn(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": {"return_id": RETURN_ID, "messages": []}})
    return_id: UUID
    messages: list[Sms]


INBOUND_EXAMPLE = [{"id": "in-1", "from": "+8613812345678", "text": "STOP"}]
STATUS_EXAMPLE = [{"provider_message_id": "file-0123456789abcdef", "status": "delivered"}]


def webhook_body(example: list[dict[str, Any]]) -> dict[str, Any]:
    """`openapi_extra`: the provider's callback body (JSON for the file provider and Aliyun, a form for
    Twilio) and its signature scheme."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"type": "array", "items": {"type": "object"}},
                    "example": example,
                },
                "application/x-www-form-urlencoded": {"schema": {"type": "object"}, "example": {"MessageSid": "SM1"}},
            },
        },
        "security": [{"returnflowSignature": []}, {"twilioSignature": []}],
    }


PROVIDER_ANSWER: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "acknowledged, in the provider's own form (JSON; Twilio: empty TwiML)",
        "content": {
            "application/json": {"schema": {"type": "object"}, "example": {"ok": True}},
            "text/xml": {"schema": {"type": "string"}},
        },
    },
    204: {"description": "acknowledged (Twilio's delivery receipts)"},
}


class AttentionItem(BaseModel):
    kind: Literal["sms_failed", "opted_out"]
    item_id: str
    return_id: UUID
    shop_id: str | None
    order_id: str | None
    at: datetime = Field(description="when it failed, or when the number opted out")
    step: str | None = Field(description="the message's step (sms_failed)")
    detail: str | None = Field(description="the provider's error, or the opt-out keyword")
    phone_masked: str


class AttentionCounts(BaseModel):
    sms_failed: int
    opted_out: int


class Attention(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"example": {"items": [], "next_cursor": None, "counts": {"sms_failed": 0, "opted_out": 0}}}
    )
    items: list[AttentionItem] = Field(description="oldest first")
    next_cursor: str | None = Field(description="`cursor` of the next page; null on the last page")
    counts: AttentionCounts = Field(description="over the whole filter, every page")


class WebhookDelivery(BaseModel):
    """One merchant webhook delivery: one lifecycle event to one of the shop's endpoints."""

    id: int
    webhook_id: str = Field(description="the webhook-id header: the same on every attempt")
    url: str
    type: str = Field(description="refund.paid, return.received, ...")
    return_id: UUID
    status: Literal["pending", "sending", "delivered", "failed"]
    attempts: int
    last_status: int | None = Field(description="the endpoint's last HTTP status (null: no answer)")
    last_error: str | None = Field(description="the last failure (kept after a later success)")
    last_attempt_at: datetime | None
    next_attempt_at: datetime | None = Field(description="when a pending delivery is attempted next")
    delivered_at: datetime | None
    give_up_at: datetime = Field(description="no attempt after this: the delivery is then failed for good")
    created_at: datetime


class WebhookDeliveries(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": {"shop_id": "demo-shop", "items": [], "next_cursor": None}})
    shop_id: str
    items: list[WebhookDelivery] = Field(description="newest first")
    next_cursor: str | None = Field(description="`cursor` of the next page; null on the last page")
