"""`make run`'s warehouse step: a carrier scan that arrives before the return's tracking number is
known (parked, then applied), the same scan delivered twice, and a receipt the warehouse refuses."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson

from apphost.registry import base_url_for
from returnflow.settings import Settings
from returnflow.signing import DELIVERY_HEADER, SIGNATURE_HEADER, sign
from services.warehouse import dev as warehouse_dev

DEVICE_TOKEN = warehouse_dev.DEVICE_TOKEN


def demo_tracking(ret: dict[str, Any]) -> str:
    return f"SF{ret['platform_return_id'].replace('demo-', '').replace('-', '').upper()}"


async def post_scan(
    client: httpx.AsyncClient, settings: Settings, tracking_no: str, code: str, at: datetime
) -> httpx.Response:
    raw = orjson.dumps(
        {"tracking_no": tracking_no, "scan_code": code, "scanned_at": at.isoformat(), "location": "Hangzhou hub"}
    )
    headers = {"content-type": "application/json", SIGNATURE_HEADER: sign(settings.secrets_for("carriers")[0], raw)}
    return await client.post(
        f"{base_url_for(settings, 'warehouse')}/v1/webhooks/carriers/sf/scans", content=raw, headers=headers
    )


async def play(client: httpx.AsyncClient, settings: Settings, returns: list[dict[str, Any]]) -> None:
    ret = next(r for r in returns if r["kind"] == "return_and_refund")
    tracking = demo_tracking(ret)
    wh = base_url_for(settings, "warehouse")
    picked_up = datetime.now(UTC) - timedelta(minutes=5)
    r = await post_scan(client, settings, tracking, "picked_up", picked_up)
    print(
        f"  courier scan {tracking} picked_up before the tracking number is known -> "
        f"{r.status_code} {r.json()['status']}"
    )

    raw = orjson.dumps(
        {"shop_id": ret["shop_id"], "type": "tracking_registered", "tracking_no": tracking, "carrier": "sf"}
    )
    headers = {
        "content-type": "application/json",
        SIGNATURE_HEADER: sign(settings.secrets_for("generic")[0], raw),
        DELIVERY_HEADER: str(uuid.uuid4()),
    }
    url = f"{base_url_for(settings, 'returns')}/v1/webhooks/generic/returns/{ret['platform_return_id']}/events"
    r = await client.post(url, content=raw, headers=headers)
    print(f"  platform registers tracking number {tracking} on the return -> {r.status_code}")
    for _ in range(50):
        parcel = (await client.get(f"{wh}/v1/warehouse/parcels/{ret['return_id']}")).json()
        if parcel.get("scans"):
            print("  the parked scan is applied: parcel.scanned published, marked as the first moving scan")
            break
        await asyncio.sleep(0.2)

    for attempt in (1, 2):
        r = await post_scan(client, settings, tracking, "in_transit", picked_up + timedelta(minutes=3))
        print(f"  courier scan in_transit, delivery #{attempt} -> {r.status_code} duplicate={r.json()['duplicate']}")

    bad = {
        "return_id": ret["return_id"],
        "inspector_id": "insp-wang",
        "lines": [{"sku": "JACKET-M", "qty_received": 3, "condition": "as_described", "disposition": "restock"}],
    }
    r = await client.post(f"{wh}/v1/warehouse/receipts", json=bad, headers={"authorization": f"Bearer {DEVICE_TOKEN}"})
    print(f"  receipt of 3 jackets when 1 was requested -> {r.status_code}")
    for f in r.json().get("fields", []):
        print(f"    {f['field']}: {f['message']}")
    await exchange_to_the_end(client, settings, returns)


async def exchange_to_the_end(client: httpx.AsyncClient, settings: Settings, returns: list[dict[str, Any]]) -> None:
    """The exchange: its shoes received, the smaller size shipped back (a mismatch refused first), the
    outgoing parcel scanned delivered, and the exchange's status."""
    ret = next(r for r in returns if r["kind"] == "exchange")
    rid, wh = ret["return_id"], base_url_for(settings, "warehouse")
    device = {"authorization": f"Bearer {DEVICE_TOKEN}"}
    got = [{"sku": "SHOES-42", "qty_received": 1, "condition": "as_described", "disposition": "restock"}]
    receipt = {"return_id": rid, "inspector_id": "insp-wang", "lines": got}
    r = await client.post(f"{wh}/v1/warehouse/receipts", json=receipt, headers=device)
    print(f"  exchange: the shoes (size 42) received -> {r.status_code}")
    outgoing = f"SFX{rid.replace('-', '')[:10].upper()}"
    ship = {"return_id": rid, "carrier": "sf", "tracking_no": outgoing, "packed_by": "packer-li"}
    r = await client.post(
        f"{wh}/v1/warehouse/replacements", json=ship | {"lines": [{"sku": "SHOES-43", "qty": 1}]}, headers=device
    )
    print(f"  replacement SHOES-43 when the customer asked for SHOES-41 -> {r.status_code}")
    for f in r.json().get("fields", []):
        print(f"    {f['field']}: {f['message']}")
    r = await client.post(
        f"{wh}/v1/warehouse/replacements", json=ship | {"lines": [{"sku": "SHOES-41", "qty": 1}]}, headers=device
    )
    print(f"  replacement SHOES-41 shipped, tracking {outgoing} -> {r.status_code} (exchange.replacement_shipped)")
    r = await post_scan(client, settings, outgoing, "delivered", datetime.now(UTC))
    print(f"  courier scan {outgoing} delivered -> {r.status_code} (exchange.replacement_delivered)")
    url = f"{base_url_for(settings, 'returns')}/v1/returns/{rid}"
    for _ in range(50):
        status = (await client.get(url)).json().get("status")
        if status == "exchange_delivered":
            break
        await asyncio.sleep(0.2)
    print(f"  the exchange's status: {status}")
