"""The bodies the warehouse service answers (its OpenAPI response models)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

RETURN_ID = "0b9e7f3c-59a4-4a0e-9a52-3f1f6f0c2d11"


class WarehouseWhoAmI(BaseModel):
    """The device or staff member (kind) a bearer token belongs to, and their warehouse."""

    model_config = ConfigDict(
        json_schema_extra={"example": {"id": "wh-zhao", "warehouse_id": "WH-DEMO", "kind": "staff"}}
    )
    id: str
    warehouse_id: str
    kind: str


class ScanAccepted(BaseModel):
    """A carrier scan: matched to its parcel, or parked until the parcel is known (202); again (200)."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {"scan_id": "sf:SF1234567890:picked_up:…", "status": "matched", "return_id": RETURN_ID}
            | {"duplicate": False}
        }
    )
    scan_id: str
    status: str
    return_id: UUID | None
    duplicate: bool


class ReceiptRecorded(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"example": {"receipt_id": "dock-1-000123", "return_id": RETURN_ID, "duplicate": False}}
    )
    receipt_id: str
    return_id: UUID
    duplicate: bool


class ParcelLine(BaseModel):
    sku: str
    qty: int
    unit_price: int
    replacement_sku: str | None = Field(default=None, description="exchange: the SKU sent instead (none: the same)")


class ParcelScan(BaseModel):
    scan_id: str
    carrier: str
    scan_code: str
    scanned_at: datetime
    location: str | None
    first_moving: bool


class ParcelReceipt(BaseModel):
    receipt_id: str
    warehouse_id: str
    device_id: str
    inspector_id: str
    received_at: datetime
    lines: Any


class ParcelReplacement(BaseModel):
    """An exchange's replacement, shipped (and delivered once its parcel is scanned delivered)."""

    shipment_id: str
    carrier: str
    tracking_no: str
    packed_by: str
    shipped_at: datetime
    lines: Any
    delivered_at: datetime | None


class Parcel(BaseModel):
    """A return's parcel: what is expected back, its carrier scans and its receipt."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "example": {
                "return_id": RETURN_ID,
                "requested": True,
                "kind": "return_and_refund",
                "tracking_no": "SF1234567890",
                "lines": [{"sku": "SKU-1", "qty": 1, "unit_price": 5000}],
                "scans": [],
                "receipt": None,
            }
        },
    )
    return_id: UUID
    requested: bool
    kind: str | None
    tracking_no: str | None
    lines: list[ParcelLine]
    scans: list[ParcelScan]
    receipt: ParcelReceipt | None
    replacement: ParcelReplacement | None = None
    replacement_released_at: datetime | None = Field(
        default=None,
        description="exchange: when refunds released the replacement at the first moving scan (it may ship "
        "before the goods are received)",
    )


class ParkedScan(BaseModel):
    scan_id: str
    carrier: str
    tracking_no: str
    scan_code: str
    scanned_at: datetime
    received_at: datetime


class ParkedScans(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": {"scans": []}})
    scans: list[ParkedScan]


KUAIDI100_OK: dict[str, Any] = {"result": True, "returnCode": "200", "message": "成功"}


class Kuaidi100Answer(BaseModel):
    """What Kuaidi100 reads as success; anything else (or no answer) and it pushes again later."""

    model_config = ConfigDict(json_schema_extra={"example": KUAIDI100_OK})
    result: bool
    returnCode: str
    message: str


class FeedScanRecorded(BaseModel):
    scan_id: str
    status: str
    return_id: UUID | None


class FeedAccepted(BaseModel):
    """A tracking provider's push: its checkpoints recorded as new scans (matched or parked), seen
    before (duplicates), or skipped (a state that is not a scan, see docs/couriers.md)."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "checkpoints": 1,
                "recorded": [{"scan_id": "aftership:5f0c…", "status": "matched", "return_id": RETURN_ID}],
                "duplicates": 0,
                "skipped": 0,
            }
        }
    )
    checkpoints: int
    recorded: list[FeedScanRecorded]
    duplicates: int
    skipped: int


class ExpectedLine(BaseModel):
    line_no: int
    sku: str
    qty: int = Field(description="units expected back")
    unit_price: int = Field(description="minor units")


class ReceivedAlready(BaseModel):
    receipt_id: str
    received_at: datetime
    inspector_id: str


class ParcelToReceive(BaseModel):
    """A parcel found by its tracking number: the return, the lines expected, the receipt if received."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "return_id": RETURN_ID,
                "tracking_no": "SF1234567890",
                "carrier": "sf",
                "kind": "return_and_refund",
                "shop_id": "demo-shop",
                "requested": True,
                "cancelled_at": None,
                "lines": [{"line_no": 1, "sku": "SKU-1", "qty": 1, "unit_price": 5000}],
                "receipt": None,
            }
        }
    )
    return_id: UUID
    tracking_no: str
    carrier: str | None
    kind: str | None = Field(description="null until the return itself is known here")
    shop_id: str | None
    requested: bool
    cancelled_at: datetime | None
    lines: list[ExpectedLine]
    receipt: ReceivedAlready | None = Field(description="the parcel was received already (a second is refused)")


class ReplacementRecorded(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {"shipment_id": "pack-2-000045", "return_id": RETURN_ID, "tracking_no": "SF9876543210"}
            | {"duplicate": False}
        }
    )
    shipment_id: str
    return_id: UUID
    tracking_no: str
    duplicate: bool


class OutOfStockRecorded(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": {"return_id": RETURN_ID, "duplicate": False}})
    return_id: UUID
    duplicate: bool
