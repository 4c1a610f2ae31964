"""Pure decisions of the warehouse service: what a carrier scan and a receipt are, which scan is the
first to show the parcel moving, whether a receipt fits what was requested, and which stock
movements it attests. No I/O."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator, model_validator

from contracts.events import MOVING_SCAN_CODES, Condition, Disposition, Movement, ScanCode

CARRIER = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
MOVEMENT_OF: dict[Disposition, Movement | None] = {
    Disposition.restock: Movement.restock,
    Disposition.destroy: Movement.destroy,
    Disposition.refurbish: Movement.refurbish,
    Disposition.quarantine: None,  # held for a decision: no stock movement yet
}
# Kinds for which goods come back to the warehouse.
PARCEL_KINDS = frozenset({"return_and_refund", "exchange"})


def _aware(v: datetime | None, name: str) -> datetime | None:
    if v is not None and v.tzinfo is None:
        raise ValueError(f"{name} needs a timezone offset")
    return v


# -- carrier scans ------------------------------------------------------------------------------------


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


def scan_identity(carrier: str, scan: ScanWebhook) -> str:
    """One id per distinct scan, however often it is delivered: the carrier's id when it sends one,
    else a digest of what makes a scan distinct (carrier, tracking number, code, time)."""
    if scan.scan_id:
        return f"{carrier}:{scan.scan_id}"
    at = scan.scanned_at.astimezone(UTC).isoformat(timespec="microseconds")
    digest = hashlib.sha256(f"{carrier}|{scan.tracking_no}|{scan.scan_code.value}|{at}".encode()).hexdigest()
    return f"{carrier}:{digest[:32]}"


def is_moving(code: ScanCode | str) -> bool:
    return ScanCode(code) in MOVING_SCAN_CODES


@dataclass(frozen=True)
class PendingScan:
    scan_id: str
    scan_code: str
    scanned_at: datetime


def first_moving(already_moving: bool, scans: Sequence[PendingScan]) -> str | None:
    """Of scans being published now for one parcel, the one to mark as the first showing it moving:
    none if an earlier publication already did; else the earliest moving scan by scan time."""
    if already_moving:
        return None
    moving = [s for s in scans if is_moving(s.scan_code)]
    if not moving:
        return None
    return min(moving, key=lambda s: (s.scanned_at, s.scan_id)).scan_id


def publication_order(scans: Iterable[PendingScan]) -> list[PendingScan]:
    return sorted(scans, key=lambda s: (s.scanned_at, s.scan_id))


# -- receipts -------------------------------------------------------------------------------------------


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


def receipt_fingerprint(body: ReceiptBody) -> str:
    """What must match for a repeated receipt to count as the same one."""
    lines = sorted(
        (x.sku, x.qty_received, x.condition.value, x.disposition.value if x.disposition else "") for x in body.lines
    )
    return hashlib.sha256(repr((body.inspector_id, lines)).encode()).hexdigest()


@dataclass(frozen=True)
class ExpectedLine:
    sku: str
    qty: int
    unit_price: int


def requested_by_sku(expected: Sequence[ExpectedLine]) -> dict[str, tuple[int, int]]:
    """sku -> (quantity requested over all lines, unit price). A SKU listed twice at different prices
    is valued at its lowest price (a receipt counts units per SKU, not per request line)."""
    out: dict[str, tuple[int, int]] = {}
    for line in expected:
        qty, price = out.get(line.sku, (0, line.unit_price))
        out[line.sku] = (qty + line.qty, min(price, line.unit_price))
    return out


def receipt_errors(expected: Sequence[ExpectedLine], body: ReceiptBody) -> list[dict[str, str]]:
    """Field errors of a receipt against what the return requested ([] when it fits)."""
    requested = requested_by_sku(expected)
    errors: list[dict[str, str]] = []
    received: dict[str, int] = {}
    for i, line in enumerate(body.lines):
        where = f"lines.{i}"
        if line.sku not in requested:
            errors.append(
                {"field": f"{where}.sku", "message": f"SKU {line.sku!r} is not in this return ({', '.join(requested)})"}
            )
            continue
        if line.condition == Condition.missing and line.qty_received != 0:
            errors.append({"field": f"{where}.qty_received", "message": "a missing line has qty_received 0"})
        if line.condition != Condition.missing and line.qty_received == 0:
            errors.append({"field": f"{where}.condition", "message": "nothing received: use condition 'missing'"})
        if line.qty_received > 0 and line.disposition is None:
            errors.append({"field": f"{where}.disposition", "message": "required when goods were received"})
        received[line.sku] = received.get(line.sku, 0) + line.qty_received
    for i, line in enumerate(body.lines):
        if line.sku in requested and received[line.sku] > requested[line.sku][0]:
            errors.append(
                {
                    "field": f"lines.{i}.qty_received",
                    "message": f"{received[line.sku]} x {line.sku} received but the return requested "
                    f"{requested[line.sku][0]}: record extra goods separately",
                }
            )
            received[line.sku] = -1  # report each SKU once
    named = {line.sku for line in body.lines}
    unaccounted = [sku for sku in requested if sku not in named]
    if unaccounted:
        errors.append(
            {
                "field": "lines",
                "message": f"requested SKU(s) {', '.join(unaccounted)} not recorded: "
                "add them (condition 'missing' when they did not arrive)",
            }
        )
    return errors


@dataclass(frozen=True)
class ReceivedLineOut:
    sku: str
    qty_requested: int
    qty_received: int
    unit_price: int
    condition: Condition
    disposition: Disposition


def received_lines(expected: Sequence[ExpectedLine], body: ReceiptBody) -> list[ReceivedLineOut]:
    """The lines of the return-received event: one per receipt line (same SKU, condition and
    disposition merged); qty_requested is the SKU's requested total."""
    requested = requested_by_sku(expected)
    merged: dict[tuple[str, Condition, Disposition], int] = {}
    for line in body.lines:
        disposition = line.disposition or Disposition.quarantine
        k = (line.sku, line.condition, disposition)
        merged[k] = merged.get(k, 0) + line.qty_received
    return [
        ReceivedLineOut(sku, requested[sku][0], qty, requested[sku][1], condition, disposition)
        for (sku, condition, disposition), qty in merged.items()
    ]


def stock_movements(lines: Sequence[ReceivedLineOut]) -> list[tuple[str, Movement, int]]:
    """(sku, movement, quantity) the warehouse attests: one per SKU and movement with goods in it."""
    out: dict[tuple[str, Movement], int] = {}
    for line in lines:
        movement = MOVEMENT_OF[line.disposition]
        if movement is not None and line.qty_received > 0:
            out[(line.sku, movement)] = out.get((line.sku, movement), 0) + line.qty_received
    return [(sku, movement, qty) for (sku, movement), qty in out.items()]
