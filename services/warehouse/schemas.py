"""What arrives over HTTP: a carrier's scan webhook and a warehouse device's receipt, validated at the
edge (each bad field named). Pure: no I/O."""

from __future__ import annotations

import re
from datetime import datetime
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator, model_validator

from contracts.events import Condition, Disposition, ScanCode

CARRIER = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")  # a carrier's slug in the scan webhook's path


def _aware(v: datetime | None, name: str) -> datetime | None:
    if v is not None and v.tzinfo is None:
        raise ValueError(f"{name} needs a timezone offset")
    return v


class ScanWebhook(BaseModel):
    """Body of POST /v1/webhooks/carriers/{carrier}/scans."""

    model_config = ConfigDict(extra="ignore")
    tracking_no: str = Field(min_length=1, max_length=64)
    scan_code: ScanCode
    scanned_at: datetime
    location: str | None = Field(default=None, max_length=200)
    scan_id: str | None = Field(
        default=None, min_length=1, max_length=128, description="the carrier's own id of this scan, if it has one"
    )

    @field_validator("scanned_at")
    @classmethod
    def _scanned_at(cls, v: datetime) -> datetime:
        return _aware(v, "scanned_at") or v


class ReceiptLineIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    sku: str = Field(min_length=1, max_length=64)
    qty_received: StrictInt = Field(ge=0, le=10_000)
    condition: Condition
    disposition: Disposition | None = Field(
        default=None, description="required when qty_received > 0; a missing line has no disposition"
    )


class ReceiptBody(BaseModel):
    """Body of POST /v1/warehouse/receipts. Name the return by id or by the parcel's tracking number."""

    model_config = ConfigDict(extra="ignore")
    receipt_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9._:-]{1,128}$",
        description="the device's id for this receipt; sending it again with the same content is harmless",
    )
    return_id: UUID | None = None
    tracking_no: str | None = Field(default=None, min_length=1, max_length=64)
    inspector_id: str = Field(min_length=1, max_length=128)
    received_at: datetime | None = None
    lines: list[ReceiptLineIn] = Field(min_length=1, max_length=200)

    @field_validator("received_at")
    @classmethod
    def _received_at(cls, v: datetime | None) -> datetime | None:
        return _aware(v, "received_at")

    @model_validator(mode="after")
    def _one_reference(self) -> ReceiptBody:
        if (self.return_id is None) == (self.tracking_no is None):
            raise ValueError("give exactly one of return_id or tracking_no")
        return self

    @property
    def reference(self) -> str:
        """How the receipt names its return, for a message."""
        return f"return {self.return_id}" if self.return_id else f"tracking number {self.tracking_no!r}"


class ReplacementLineIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    sku: str = Field(min_length=1, max_length=64)
    qty: StrictInt = Field(ge=1, le=10_000)


class ReplacementBody(BaseModel):
    """Body of POST /v1/warehouse/replacements: an exchange's replacement handed to a courier."""

    model_config = ConfigDict(extra="ignore")
    shipment_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9._:-]{1,128}$",
        description="the device's id for this shipment; sending it again with the same content is harmless",
    )
    return_id: UUID
    carrier: str = Field(pattern=CARRIER.pattern, description="the outgoing courier's slug")
    tracking_no: str = Field(pattern=r"^[A-Za-z0-9]{6,40}$", description="the outgoing parcel's tracking number")
    packed_by: str = Field(min_length=1, max_length=128, description="the person who packed and handed it over")
    shipped_at: datetime | None = None
    lines: list[ReplacementLineIn] = Field(min_length=1, max_length=200)

    @field_validator("shipped_at")
    @classmethod
    def _shipped_at(cls, v: datetime | None) -> datetime | None:
        return _aware(v, "shipped_at")


class OutOfStockBody(BaseModel):
    """Body of POST /v1/warehouse/replacements/out-of-stock: no replacement to send."""

    model_config = ConfigDict(extra="ignore")
    return_id: UUID
    skus: list[str] = Field(min_length=1, max_length=200, description="the replacement SKUs not in stock")
    reported_by: str = Field(min_length=1, max_length=128)
    note: str | None = Field(default=None, max_length=2000)
