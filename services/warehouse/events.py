"""Decisions of the warehouse service as the integration events it publishes (contracts models): a
parcel-scanned event per matched scan, and per accepted receipt a return-received event plus the
warehouse side of an inventory attestation per stock movement. Pure."""

from __future__ import annotations

import uuid
from datetime import datetime
from uuid import UUID

from contracts.events import (
    ExchangeOutOfStock,
    InventoryAttested,
    Message,
    ParcelScanned,
    ReceivedLine,
    ReplacementDelivered,
    ReplacementLine,
    ReplacementShipped,
    ReturnReceived,
    ScanCode,
)
from services.warehouse.rules import CarrierScan, Receipt, Replacement, replacement_movements, stock_movements


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


def replacement_events(r: Replacement, now: datetime) -> list[Message]:
    """exchange.replacement_shipped, then the warehouse's attestation of each SKU leaving stock
    (`<shipment id>:<n>`), for the returns team to check like any other stock movement."""
    shipped = ReplacementShipped(
        occurred_at=now,
        return_id=r.return_id,
        correlation_id=r.correlation_id,
        shipment_id=r.shipment_id,
        warehouse_id=r.warehouse_id,
        carrier=r.carrier,
        tracking_no=r.tracking_no,
        lines=[ReplacementLine(sku=sku, qty=qty) for sku, qty in r.lines],
        shipped_by=r.packed_by,
        shipped_at=r.shipped_at,
    )
    attested = [
        InventoryAttested(
            occurred_at=now,
            return_id=r.return_id,
            correlation_id=r.correlation_id,
            attestation_id=f"{r.shipment_id}:{n}",
            source="warehouse",
            sku=sku,
            movement=movement,
            quantity=qty,
            attested_by=r.packed_by,
            attested_at=r.shipped_at,
        )
        for n, (sku, movement, qty) in enumerate(replacement_movements(r), 1)
    ]
    return [shipped, *attested]


def replacement_delivered(return_id: UUID, shipment_id: str, s: CarrierScan, now: datetime) -> ReplacementDelivered:
    return ReplacementDelivered(
        occurred_at=now,
        return_id=return_id,
        correlation_id=s.correlation_id,
        shipment_id=shipment_id,
        carrier=s.carrier,
        tracking_no=s.tracking_no,
        scan_id=s.scan_id,
        delivered_at=s.scanned_at,
    )


def out_of_stock(
    return_id: UUID, skus: list[str], warehouse_id: str, reported_by: str, note: str | None, cid: str, now: datetime
) -> ExchangeOutOfStock:
    return ExchangeOutOfStock(
        occurred_at=now,
        return_id=return_id,
        correlation_id=cid,
        skus=skus,
        warehouse_id=warehouse_id,
        reported_by=reported_by,
        note=note,
    )
