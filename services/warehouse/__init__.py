"""The warehouse service (warehouse-confirm): expected parcels from return requests, signed carrier
scans and courier tracking feeds (parked until their parcel is known), Kuaidi100 subscriptions for new
tracking numbers, device-authenticated receipts. Its SPEC is what the
platform app runs."""

from __future__ import annotations

from pathlib import Path

import httpx

from contracts.catalog import topic_of
from contracts.events import RefundDecided, ReplacementReleased, ReturnCancelled, ReturnRequested, TrackingRegistered
from returnflow.batching import GroupCommitter
from returnflow.http import token_digest
from returnflow.service import ConsumerSpec, Runtime, ServiceSpec
from services.warehouse import api, handlers, views
from services.warehouse.handlers import Device, WarehouseContext
from services.warehouse.settings import WarehouseSettings

LIFECYCLE_TOPICS = [
    topic_of(ReturnRequested),
    topic_of(TrackingRegistered),
    topic_of(ReturnCancelled),
    topic_of(RefundDecided),  # an exchange converted to a refund ships no replacement
    topic_of(ReplacementReleased),  # ... and one released at the first moving scan ships before receipt
]


async def build_context(rt: Runtime, settings: WarehouseSettings) -> WarehouseContext:
    wait_s = settings.batch_wait_ms / 1000
    return WarehouseContext(
        pool=rt.pool,
        settings=settings,
        runtime_settings=rt.settings,
        devices={
            token_digest(d.token.get_secret_value()): Device(device_id, d.warehouse_id)
            for device_id, d in settings.devices.items()
        }
        | {
            token_digest(p.token.get_secret_value()): Device(person_id, p.warehouse_id, "staff")
            for person_id, p in settings.staff.items()
        },
        scans=GroupCommitter(rt.pool, handlers.accept_scans, max_size=settings.batch_max, max_wait_s=wait_s),
        receipts=GroupCommitter(rt.pool, handlers.accept_receipts, max_size=settings.batch_max, max_wait_s=wait_s),
        kuaidi100=httpx.AsyncClient(timeout=settings.kuaidi100_timeout_s) if settings.kuaidi100_subscribes else None,
    )


async def close_context(ctx: WarehouseContext) -> None:
    await ctx.scans.close()
    await ctx.receipts.close()
    if ctx.kuaidi100 is not None:
        await ctx.kuaidi100.aclose()


SPEC: ServiceSpec[WarehouseContext] = ServiceSpec(
    name="warehouse",
    folder=Path(__file__).parent,
    description="Expected parcels, carrier scans (matched or parked) and warehouse receipts; publishes "
    "parcel-scanned, return-received and the warehouse side of inventory attestations.",
    settings=WarehouseSettings,
    context=build_context,
    close=close_context,
    router=api.router,
    readers=api.device_reader,
    consumers=[ConsumerSpec("lifecycle", LIFECYCLE_TOPICS, apply=handlers.apply_lifecycle)],
    workers=[handlers.kuaidi100_subscriber],
    idle=handlers.nothing_to_subscribe,
    backlogs=views.backlogs,
)

__all__ = ["SPEC", "WarehouseContext", "WarehouseSettings"]
