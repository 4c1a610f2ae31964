"""Decisions of the warehouse service as the integration events it publishes (contracts models): a
parcel-scanned event per matched scan, and per accepted receipt a return-received event plus the
warehouse side of an inventory attestation per stock movement. Pure."""

from __future__ import annotations

import uuid
from datetime import datetime
from uuid import UUID

from contracts.events import InventoryAttested, Message, ParcelScanned, ReceivedLine, ReturnReceived, ScanCode
from services.warehouse.rules import CarrierScan, Receipt, stock_movements


def parcel_scanned(return_id: UUID, s: CarrierScan, first_moving: bool, now: datetime) -> ParcelScanned:
    return ParcelScanned.model_construct(
        event_id=uuid.uuid4(),
        type="parcel.scanned",
        version=1,
        occurred_at=now,
        return_id=return_id,
        correlation_id=s.correlation_id,
        scan_id=s.scan_id,
        tracking_no=s.tracking_no,
        carrier=s.carrier,
        scan_code=ScanCode(s.scan_code),
        scanned_at=s.scanned_at,
        location=s.location,
        first_moving=first_moving,
    )


def received_lines(r: Receipt) -> list[ReceivedLine]:
    return [
        ReceivedLine(
            sku=x.sku,
            qty_requested=x.qty_requested,
            qty_received=x.qty_received,
            unit_price=x.unit_price,
            condition=x.condition,
            disposition=x.disposition,
        )
        for x in r.lines
    ]


def receipt_events(r: Receipt, now: datetime) -> list[Message]:
    """return.received, then one warehouse attestation per stock movement (`<receipt id>:<n>`)."""
    received = ReturnReceived(
        occurred_at=now,
        return_id=r.return_id,
        correlation_id=r.correlation_id,
        receipt_id=r.receipt_id,
        warehouse_id=r.warehouse_id,
        inspector_id=r.inspector_id,
        received_at=r.received_at,
        lines=received_lines(r),
    )
    attested = [
        InventoryAttested(
            occurred_at=now,
            return_id=r.return_id,
            correlation_id=r.correlation_id,
            attestation_id=f"{r.receipt_id}:{n}",
            source="warehouse",
            sku=sku,
            movement=movement,
            quantity=qty,
            attested_by=r.inspector_id,
            attested_at=r.received_at,
        )
        for n, (sku, movement, qty) in enumerate(stock_movements(r.lines), 1)
    ]
    return [received, *attested]
