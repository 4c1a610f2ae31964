"""An exchange to its end on the real broker and PostgreSQL: the goods received, the replacement shipped
through `returnflow replacement ship` (device token, idempotent, a second shipment refused, a mismatch
named by field), its outgoing parcel scanned delivered through the same carrier intake, the customer's
"replacement on its way" SMS with the outgoing tracking number, and the return's status and timeline; and in
a shop whose exchanges ship at the first scan, the replacement released by refunds at the inbound parcel's
first moving scan and shipped before the goods are back."""

from __future__ import annotations

import uuid

import httpx
import orjson

from returnflow.signing import SIGNATURE_HEADER, sign
from services.notify import SPEC as NOTIFY
from services.refunds import SPEC as REFUNDS
from services.returns import SPEC as RETURNS
from services.warehouse import SPEC as WAREHOUSE
from services.warehouse import dev as warehouse_dev
from tests.integration.money_path_support import CARRIER_SECRET, DEVICE, refunds_settings
from tests.integration.notify_support import notify_settings, sms_lines
from tests.integration.test_decisions_cli import cli, env_for
from tests.kafkautil import wait_for
from tests.readers import READ
from tests.webhooks import return_body, signed


async def test_the_replacement_shipped_delivered_and_told(settings, service_runner, tmp_path):
    sms = notify_settings(settings)
    inbound, outgoing = f"SFIN{uuid.uuid4().hex[:8].upper()}", f"SFOUT{uuid.uuid4().hex[:8].upper()}"
    async with (
        service_runner(RETURNS, settings) as ret,
        service_runner(WAREHOUSE, settings, warehouse_dev.dev_settings()) as wh,
        service_runner(NOTIFY, *sms),
        httpx.AsyncClient(base_url=wh.base_url, headers=READ) as warehouse,
        httpx.AsyncClient(base_url=ret.base_url, headers=READ) as returns,
    ):
        line = {"sku": "SHOE-41", "qty": 1, "unit_price": 6000, "reason": "size", "replacement_sku": "SHOE-42"}
        body = return_body(kind="exchange", tracking_no=inbound, paid_total=6000, lines=[line])
        body["customer"] = {**body["customer"], "locale": "en", "phone": "+8613811113333"}
        raw, h = signed(body)
        rid = (await returns.post("/v1/webhooks/generic/returns", content=raw, headers=h)).json()["return_id"]

        async def known() -> bool:
            return (await warehouse.get(f"/v1/warehouse/parcels/{rid}")).status_code == 200

        await wait_for(known)
        got = [{"sku": "SHOE-41", "qty_received": 1, "condition": "as_described", "disposition": "restock"}]
        receipt = {"return_id": rid, "inspector_id": "insp-wang", "lines": got}
        assert (await warehouse.post("/v1/warehouse/receipts", json=receipt, headers=DEVICE)).status_code == 201

        url = "/v1/warehouse/replacements"
        ship = {"return_id": rid, "carrier": "sf", "tracking_no": outgoing, "packed_by": "packer-li"}
        ship |= {"shipment_id": "pack-7", "lines": [{"sku": "SHOE-42", "qty": 1}]}
        assert (await warehouse.post(url, json=ship)).status_code == 401  # a reader is not a device
        wrong = await warehouse.post(url, json=ship | {"lines": [{"sku": "SHOE-41", "qty": 2}]}, headers=DEVICE)
        assert wrong.status_code == 422
        assert [f["field"] for f in wrong.json()["fields"]] == ["lines.0.sku", "lines"]

        env = env_for(tmp_path, RETURNFLOW_DEVICE_TOKEN=warehouse_dev.DEVICE_TOKEN)
        args = ["--line", "SHOE-42:1", "--carrier", "sf", "--tracking-no", outgoing, "--packed-by", "packer-li"]
        out = await cli(env, "replacement", "ship", rid, *args, "--shipment-id", "pack-7", "--url", wh.base_url)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith(f"shipped: replacement pack-7 of return {rid}, tracking number {outgoing}")
        again = await warehouse.post(url, json=ship, headers=DEVICE)
        assert again.status_code == 200 and again.json() == {
            "shipment_id": "pack-7",
            "return_id": rid,
            "tracking_no": outgoing,
            "duplicate": True,
        }
        second = await warehouse.post(
            url, json=ship | {"shipment_id": "pack-8", "tracking_no": "SF00000001"}, headers=DEVICE
        )
        assert second.status_code == 409 and second.json()["shipment_id"] == "pack-7"

        scan = orjson.dumps(
            {"tracking_no": outgoing, "scan_code": "delivered", "scanned_at": "2026-11-24T15:00:00+08:00"}
        )
        headers = {"content-type": "application/json", SIGNATURE_HEADER: sign(CARRIER_SECRET, scan)}
        seen = await warehouse.post("/v1/webhooks/carriers/sf/scans", content=scan, headers=headers)
        assert seen.status_code == 202 and seen.json()["return_id"] == rid

        async def delivered() -> dict | None:
            found = (await returns.get(f"/v1/returns/{rid}")).json()
            return found if found["status"] == "exchange_delivered" else None

        await wait_for(delivered)

        async def told() -> list | None:
            lines = sms_lines(sms, uuid.UUID(rid))
            return lines if any(x["step"] == "replacement_shipped" for x in lines) else None

        texts = {x["step"]: x["text"] for x in await wait_for(told)}

        async def on_timeline() -> list | None:
            # the timeline reads each topic on its own: the delivery may be consumed before the shipment
            timeline = (await returns.get(f"/v1/returns/{rid}/timeline")).json()
            entries = timeline["entries"] if isinstance(timeline, dict) else timeline
            types = [e["type"] for e in entries]
            steps = {"exchange.replacement_shipped", "exchange.replacement_delivered"}
            return types if steps <= set(types) else None

        types = await wait_for(on_timeline)
        parcel = (await warehouse.get(f"/v1/warehouse/parcels/{rid}")).json()

    assert texts["replacement_shipped"].startswith("Your replacement for order order-1 is on its way with sf")
    assert f"(tracking {outgoing})" in texts["replacement_shipped"]
    assert types.count("exchange.replacement_shipped") == 1 and types.count("exchange.replacement_delivered") == 1
    assert parcel["replacement"]["tracking_no"] == outgoing and parcel["replacement"]["delivered_at"]
    assert parcel["replacement"]["lines"] == [{"sku": "SHOE-42", "qty": 1}]
    assert [s["scan_code"] for s in parcel["scans"]] == []  # the outgoing parcel's scan is not the return's


async def test_a_shop_shipping_at_the_first_scan_sends_the_replacement_before_the_goods_are_back(
    settings, service_runner, tmp_path
):
    shops = tmp_path / "shops.yaml"
    shops.write_text("shops:\n  early-shop:\n    exchanges: {ship_at_first_scan: true}\n")
    settings = settings.model_copy(update={"shops_file": shops})
    inbound, outgoing = f"SFIN{uuid.uuid4().hex[:8].upper()}", f"SFOUT{uuid.uuid4().hex[:8].upper()}"
    async with (
        service_runner(RETURNS, settings) as ret,
        service_runner(WAREHOUSE, settings, warehouse_dev.dev_settings()) as wh,
        service_runner(REFUNDS, settings, refunds_settings("http://127.0.0.1:9")),
        httpx.AsyncClient(base_url=wh.base_url, headers=READ) as warehouse,
        httpx.AsyncClient(base_url=ret.base_url, headers=READ) as returns,
    ):
        line = {"sku": "SHOE-41", "qty": 1, "unit_price": 6000, "reason": "size", "replacement_sku": "SHOE-42"}
        body = return_body(kind="exchange", tracking_no=inbound, paid_total=6000, lines=[line], shop_id="early-shop")
        raw, h = signed(body)
        rid = (await returns.post("/v1/webhooks/generic/returns", content=raw, headers=h)).json()["return_id"]

        async def known() -> bool:
            return (await warehouse.get(f"/v1/warehouse/parcels/{rid}")).status_code == 200

        await wait_for(known)
        url = "/v1/warehouse/replacements"
        ship = {"return_id": rid, "carrier": "sf", "tracking_no": outgoing, "packed_by": "packer-li"}
        ship |= {"shipment_id": "pack-early", "lines": [{"sku": "SHOE-42", "qty": 1}]}
        too_soon = await warehouse.post(url, json=ship, headers=DEVICE)
        assert too_soon.status_code == 409 and "not been received" in too_soon.text  # not even moving yet

        scan = orjson.dumps(
            {"tracking_no": inbound, "scan_code": "picked_up", "scanned_at": "2026-11-23T10:00:00+08:00"}
        )
        headers = {"content-type": "application/json", SIGNATURE_HEADER: sign(CARRIER_SECRET, scan)}
        assert (
            await warehouse.post("/v1/webhooks/carriers/sf/scans", content=scan, headers=headers)
        ).status_code == 202

        async def released() -> dict | None:
            parcel = (await warehouse.get(f"/v1/warehouse/parcels/{rid}")).json()
            return parcel if parcel.get("replacement_released_at") else None

        await wait_for(released)  # refunds decided it, the warehouse recorded it: no receipt yet
        shipped = await warehouse.post(url, json=ship, headers=DEVICE)
        assert shipped.status_code == 201, shipped.text

        async def on_timeline() -> list | None:
            timeline = (await returns.get(f"/v1/returns/{rid}/timeline")).json()
            entries = timeline["entries"] if isinstance(timeline, dict) else timeline
            types = [e["type"] for e in entries]
            return types if "exchange.replacement_shipped" in types else None

        types = await wait_for(on_timeline)
        parcel = (await warehouse.get(f"/v1/warehouse/parcels/{rid}")).json()

    assert types.count("exchange.replacement_released") == 1
    assert parcel["receipt"] is None and parcel["replacement"]["shipment_id"] == "pack-early"
