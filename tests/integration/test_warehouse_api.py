"""warehouse-confirm over HTTP on the real broker and PostgreSQL: signatures, device tokens, receipts
that do not fit, second receipts, and the events a receipt publishes."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import orjson

from returnflow.signing import SIGNATURE_HEADER, sign
from services.returns import SPEC as RETURNS
from services.warehouse import SPEC as WAREHOUSE
from services.warehouse import dev as warehouse_dev
from tests.idle import wait_idle
from tests.integration.money_path_support import CARRIER_SECRET, DEVICE
from tests.kafkautil import read_topic, values, wait_for
from tests.readers import READ
from tests.webhooks import return_body, signed


async def test_scan_webhook_refuses_unsigned_and_invalid_bodies(settings, service_runner):
    async with (
        service_runner(WAREHOUSE, settings, warehouse_dev.dev_settings()) as wh,
        httpx.AsyncClient(base_url=wh.base_url) as client,
    ):
        url = "/v1/webhooks/carriers/sf/scans"
        good = orjson.dumps({"tracking_no": "SF1", "scan_code": "picked_up", "scanned_at": "2026-11-22T09:00:00+08:00"})
        r = await client.post(url, content=good, headers={"content-type": "application/json"})
        assert r.status_code == 401 and "X-Returnflow-Signature" in r.json()["detail"]
        r = await client.post(url, content=good, headers={SIGNATURE_HEADER: sign(b"wrong", good)})
        assert r.status_code == 401
        bad = orjson.dumps({"tracking_no": "SF1", "scan_code": "teleported", "scanned_at": "2026-11-22T09:00:00"})
        r = await client.post(
            url, content=bad, headers={"content-type": "application/json", SIGNATURE_HEADER: sign(CARRIER_SECRET, bad)}
        )
        assert r.status_code == 422
        assert {f["field"] for f in r.json()["fields"]} == {"scan_code", "scanned_at"}
        r = await client.post(
            "/v1/webhooks/carriers/SF!/scans",
            content=good,
            headers={"content-type": "application/json", SIGNATURE_HEADER: sign(CARRIER_SECRET, good)},
        )
        assert r.status_code == 404


async def test_receipts_checked_against_the_request_and_never_overwritten(settings, service_runner):
    async with (
        service_runner(RETURNS, settings) as ret,
        service_runner(WAREHOUSE, settings, warehouse_dev.dev_settings()) as wh,
        httpx.AsyncClient(base_url=wh.base_url, headers=READ) as client,
        httpx.AsyncClient(base_url=ret.base_url) as rc,
    ):
        body = return_body(
            tracking_no="SF-WH-1",
            paid_total=9000,
            lines=[
                {"sku": "A", "qty": 2, "unit_price": 2000, "reason": "size"},
                {"sku": "B", "qty": 1, "unit_price": 5000, "reason": "damaged"},
            ],
        )
        raw, h = signed(body)
        rid = (await rc.post("/v1/webhooks/generic/returns", content=raw, headers=h)).json()["return_id"]
        raw, h = signed(return_body(kind="refund_only"))
        rid_free = (await rc.post("/v1/webhooks/generic/returns", content=raw, headers=h)).json()["return_id"]

        async def known():
            return (await client.get(f"/v1/warehouse/parcels/{rid}")).status_code == 200

        await wait_for(known)
        url = "/v1/warehouse/receipts"
        ok_lines = [
            {"sku": "A", "qty_received": 2, "condition": "as_described", "disposition": "restock"},
            {"sku": "B", "qty_received": 1, "condition": "damaged", "disposition": "quarantine"},
        ]
        assert (
            await client.post(url, json={"return_id": rid, "inspector_id": "i", "lines": ok_lines})
        ).status_code == 401
        r = await client.post(
            url,
            json={"return_id": rid, "inspector_id": "i", "lines": ok_lines},
            headers={"authorization": "Bearer nope"},
        )
        assert r.status_code == 401
        over = [
            dict(ok_lines[0], qty_received=3),
            ok_lines[1],
            {"sku": "Z", "qty_received": 1, "condition": "as_described", "disposition": "restock"},
        ]
        r = await client.post(url, json={"return_id": rid, "inspector_id": "i", "lines": over}, headers=DEVICE)
        assert r.status_code == 422
        assert {f["field"] for f in r.json()["fields"]} == {"lines.0.qty_received", "lines.2.sku"}
        r = await client.post(
            url, json={"return_id": str(uuid.uuid4()), "inspector_id": "i", "lines": ok_lines}, headers=DEVICE
        )
        assert r.status_code == 404
        await wait_for(lambda: _parcel_row(wh, rid_free))
        r = await client.post(url, json={"return_id": rid_free, "inspector_id": "i", "lines": ok_lines}, headers=DEVICE)
        assert r.status_code == 409 and "refund_only" in r.json()["detail"]

        # two devices racing with different receipts for one return: exactly one is accepted
        first = {"tracking_no": "SF-WH-1", "receipt_id": "dock-1-A", "inspector_id": "insp-1", "lines": ok_lines}
        other = dict(first, receipt_id="dock-2-B", inspector_id="insp-2")
        results = await asyncio.gather(
            client.post(url, json=first, headers=DEVICE), client.post(url, json=other, headers=DEVICE)
        )
        assert sorted(r.status_code for r in results) == [201, 409]
        winner = next(r for r in results if r.status_code == 201).json()["receipt_id"]
        retry = first if winner == "dock-1-A" else other
        again = await client.post(url, json=retry, headers=DEVICE)  # the device retries after a lost answer
        assert again.status_code == 200 and again.json()["duplicate"] is True
        changed = dict(retry, lines=[dict(ok_lines[0], qty_received=1), ok_lines[1]])
        assert (await client.post(url, json=changed, headers=DEVICE)).status_code == 409

        await wait_idle(ret, wh)
        received = values(await read_topic(settings.kafka_bootstrap, "returns.received", expect=1))
        assert len(received) == 1
        assert [
            (x["sku"], x["qty_requested"], x["qty_received"], x["condition"], x["disposition"])
            for x in received[0]["lines"]
        ] == [
            ("A", 2, 2, "as_described", "restock"),
            ("B", 1, 1, "damaged", "quarantine"),
        ]
        assert received[0]["warehouse_id"] == "WH-DEMO"
        attested = values(await read_topic(settings.kafka_bootstrap, "inventory.attestations", expect=1))
        assert [(a["sku"], a["movement"], a["quantity"]) for a in attested] == [("A", "restock", 2)]  # quarantine: none


async def _parcel_row(wh, rid):
    return await wh.runtime.pool.fetchval("SELECT requested FROM parcels WHERE return_id = $1", uuid.UUID(rid))
