"""What arrives over HTTP: a carrier's scan webhook and a warehouse device's receipt, validated at the
edge (each bad field named). Pure: no I/O."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any
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


# -- courier tracking feeds (docs/couriers.md) -----------------------------------------------------------

TrackingNo = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^\S+$")]
CarrierCode = Annotated[
    str, Field(pattern=CARRIER.pattern, description="the courier's code (lowercase letters, digits, - or _)")
]


class Kuaidi100Checkpoint(BaseModel):
    """One element of `lastResult.data` (newest first). `status` (the state's name) comes with a
    subscription's `resultv2=1`, `statusCode` (the detailed state) with `resultv2=4`."""

    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)
    time: str | None = Field(default=None, max_length=32, description="as the courier wrote it")
    ftime: str | None = Field(default=None, max_length=32, description="formatted: YYYY-MM-DD HH:MM:SS, Beijing time")
    context: str = Field(default="", max_length=1000)
    status: str | None = Field(default=None, max_length=32)
    statusCode: str | None = Field(default=None, max_length=8)
    areaName: str | None = Field(default=None, max_length=200)
    location: str | None = Field(default=None, max_length=200)

    @model_validator(mode="after")
    def _when(self) -> Kuaidi100Checkpoint:
        text = (self.ftime or self.time or "").strip()
        if not text:
            raise ValueError("ftime: required (or time)")
        try:
            datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{'ftime' if self.ftime else 'time'}: not a time (YYYY-MM-DD HH:MM:SS)") from None
        return self


class Kuaidi100Result(BaseModel):
    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)
    nu: TrackingNo
    com: CarrierCode
    state: str | None = Field(default=None, max_length=8, description="the parcel's current state code")
    ischeck: str | None = None
    data: list[Kuaidi100Checkpoint] = Field(default_factory=list, max_length=500)


class Kuaidi100Push(BaseModel):
    """The JSON in a Kuaidi100 push's `param` form field."""

    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)
    status: str = Field(max_length=32, description="polling | shutdown | abort | updateall")
    message: str = Field(default="", max_length=500)
    lastResult: Kuaidi100Result


class AfterShipCheckpoint(BaseModel):
    model_config = ConfigDict(extra="ignore")
    checkpoint_time: str | None = Field(default=None, max_length=40, description="carrier's local time, ISO 8601")
    created_at: datetime | None = Field(default=None, description="when AfterShip recorded it (UTC)")
    message: str = Field(default="", max_length=1000)
    location: Any = Field(default=None, description="a place's name (older API versions) or an address object")
    city: str | None = Field(default=None, max_length=200)
    tag: str = Field(min_length=1, max_length=32)
    subtag: str | None = Field(default=None, max_length=32)


class AfterShipTracking(BaseModel):
    model_config = ConfigDict(extra="ignore")
    tracking_number: TrackingNo
    slug: CarrierCode
    tag: str = Field(min_length=1, max_length=32)
    subtag: str | None = Field(default=None, max_length=32)
    checkpoints: list[AfterShipCheckpoint] = Field(default_factory=list, max_length=500)


class AfterShipWebhook(BaseModel):
    """An AfterShip Tracking webhook (`tracking_update` and the other events)."""

    model_config = ConfigDict(extra="ignore")
    event: str = Field(min_length=1, max_length=64)
    event_id: str | None = Field(default=None, max_length=64)
    ts: int | None = None
    msg: AfterShipTracking


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
