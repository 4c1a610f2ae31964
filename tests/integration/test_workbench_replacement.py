"""A warehouse clerk finishes an exchange from the workbench alone, on the real broker and PostgreSQL: the
workbench app's routes (sign-in with the clerk's personal staff token, the return page, the "ship the
replacement" form) against the real returns and warehouse services. The form shows only once the goods
are received; a bad field and the warehouse's refusal are named next to their fields; the shipment is
posted with the clerk's own token (packed_by = the clerk); a double submit is the same shipment; "out of stock" is reported before stock arrives."""

from __future__ import annotations

import re
import uuid

import httpx
from pydantic import SecretStr

from services.returns import SPEC as RETURNS
from services.warehouse import SPEC as WAREHOUSE
from services.warehouse import dev as warehouse_dev
from services.warehouse.settings import WarehouseDevice
from services.workbench import SPEC as WORKBENCH
from services.workbench import WorkbenchSettings
from tests.integration.money_path_support import DEVICE
from tests.kafkautil import wait_for
from tests.readers import READ, READER_TOKEN
from tests.webhooks import return_body, signed

CLERK, CLERK_TOKEN = "wh-zhao", "dev-staff-token-zhao"
NOWHERE = "http://127.0.0.1:9"  # refunds, notify, audit: not started (the page shows what it has)


def hidden(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert found, f"no {name} in the page"
    return found.group(1)


async def test_a_clerk_ships_an_exchanges_replacement_from_the_return_page(settings, service_runner):
    staff = {CLERK: WarehouseDevice(warehouse_id="WH-DEMO", token=SecretStr(CLERK_TOKEN))}
    outgoing = f"SFOUT{uuid.uuid4().hex[:8].upper()}"
    async with (
        service_runner(RETURNS, settings) as ret,
        service_runner(WAREHOUSE, settings, warehouse_dev.dev_settings(staff=staff)) as wh,
        httpx.AsyncClient(base_url=wh.base_url, headers=READ) as warehouse,
        httpx.AsyncClient(base_url=ret.base_url, headers=READ) as returns,
    ):
        wb_settings = WorkbenchSettings(
            returns_url=ret.base_url,
            warehouse_url=wh.base_url,
            refunds_url=NOWHERE,
            notify_url=NOWHERE,
            audit_url=NOWHERE,
            read_token=SecretStr(READER_TOKEN),
            session_key=SecretStr("a-test-session-key"),
        )
        async with service_runner(WORKBENCH, settings, wb_settings) as wb, httpx.AsyncClient(base_url=wb.base_url) as b:
            line = {"sku": "SHOE-41", "qty": 1, "unit_price": 6000, "reason": "size", "replacement_sku": "SHOE-42"}
            raw, h = signed(
                return_body(kind="exchange", tracking_no="SFIN" + outgoing[5:], paid_total=6000, lines=[line])
            )
            rid = (await returns.post("/v1/webhooks/generic/returns", content=raw, headers=h)).json()["return_id"]

            async def known() -> bool:
                return (await warehouse.get(f"/v1/warehouse/parcels/{rid}")).status_code == 200

            await wait_for(known)

            # the clerk signs in with their personal token
            signin = await b.get("/signin")
            csrf = hidden(signin.text, "csrf")
            form = {"csrf": csrf, "person_id": CLERK, "token": CLERK_TOKEN, "next": f"/returns/{rid}"}
            signed_in = await b.post("/signin", data=form)
            assert signed_in.status_code == 303 and signed_in.headers["location"] == f"/returns/{rid}"

            page = await b.get(f"/returns/{rid}")
            assert page.status_code == 200 and 'id="ship-form"' not in page.text  # nothing received yet

            got = [{"sku": "SHOE-41", "qty_received": 1, "condition": "as_described", "disposition": "restock"}]
            receipt = {"return_id": rid, "inspector_id": "insp-wang", "lines": got}
            assert (await warehouse.post("/v1/warehouse/receipts", json=receipt, headers=DEVICE)).status_code == 201

            page = await b.get(f"/returns/{rid}")
            assert 'id="ship-form"' in page.text and 'name="sku_0"' in page.text
            assert 'value="SHOE-42"' in page.text  # the replacement SKU, pre-filled
            csrf, shipment_id = hidden(page.text, "csrf"), hidden(page.text, "shipment_id")
            ship = {"csrf": csrf, "shipment_id": shipment_id, "sku_0": "SHOE-42", "qty_0": "1", "carrier": "sf"}
            url = f"/returns/{rid}/replacement"

            assert (await b.post(url, data=ship | {"csrf": "forged", "tracking_no": outgoing})).status_code == 403
            # no stock today: reported (twice is harmless), and the form stays for when stock arrives
            for _ in range(2):
                oos = await b.post(f"{url}/out-of-stock", data={"csrf": csrf, "note": "none left"})
                assert oos.status_code == 200 and "Reported out of stock" in oos.text and 'id="ship-form"' in oos.text

            async def awaiting_stock() -> bool:
                return (await returns.get(f"/v1/returns/{rid}")).json()["status"] == "awaiting_stock"

            await wait_for(awaiting_stock)  # the report reached the returns service
            bad = await b.post(url, data=ship | {"tracking_no": "AB1"})
            assert bad.status_code == 422 and 'id="tracking_no-err"' in bad.text
            wrong = await b.post(url, data=ship | {"sku_0": "SHOE-41", "tracking_no": outgoing})
            assert wrong.status_code == 422  # the warehouse's refusal, next to the SKU
            assert 'id="sku_0-err"' in wrong.text and "is not what the exchange asked for" in wrong.text
            assert hidden(wrong.text, "shipment_id") == shipment_id  # the same shipment on the next try

            done = await b.post(url, data=ship | {"tracking_no": f" {outgoing.lower()} "})
            assert done.status_code == 200, done.text
            assert f"Replacement shipped: sf {outgoing}" in done.text and 'id="ship-form"' not in done.text
            again = await b.post(url, data=ship | {"tracking_no": outgoing})  # a double submit
            assert again.status_code == 200 and f"Replacement shipped: sf {outgoing}" in again.text

            shipped = (await warehouse.get(f"/v1/warehouse/parcels/{rid}")).json()["replacement"]
            assert (shipped["shipment_id"], shipped["packed_by"], shipped["tracking_no"]) == (
                f"wb-{shipment_id}",
                CLERK,
                outgoing,
            )
            oos = await b.post(f"{url}/out-of-stock", data={"csrf": csrf})
            assert oos.status_code == 409 and "already shipped" in oos.text  # shipped: nothing to report
