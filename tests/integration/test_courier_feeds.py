# ruff: noqa: RUF001  (Kuaidi100 checkpoints are Chinese text with full-width punctuation)
"""Courier tracking feeds over HTTP on the real broker and PostgreSQL: Kuaidi100 subscription pushes and
AfterShip Tracking webhooks, in their documented formats and really signed, become carrier scans through
the same intake as the native scan webhook (parked until the parcel is known, matched, published)."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import orjson
from pydantic import SecretStr

from services.returns import SPEC as RETURNS
from services.warehouse import SPEC as WAREHOUSE
from services.warehouse import dev as warehouse_dev
from services.warehouse.dev.kuaidi100 import serve_kuaidi100
from tests.couriers import (
    AFTERSHIP_URL,
    KUAIDI100_OK,
    KUAIDI100_URL,
    aftership_body,
    aftership_checkpoint,
    aftership_signed,
    kuaidi100_checkpoint,
    kuaidi100_form,
    kuaidi100_param,
)
from tests.idle import wait_idle
from tests.integration.money_path_support import platform
from tests.kafkautil import read_topic, values, wait_for
from tests.readers import READ
from tests.webhooks import return_body, signed

SALT = warehouse_dev.KUAIDI100_SALT
SECRET = warehouse_dev.AFTERSHIP_SECRET
ORDERED = kuaidi100_checkpoint("2026-11-22 08:02:41", "您的快件已下单，等待快递员揽收", "已下单", "101")
PICKED_UP = kuaidi100_checkpoint("2026-11-22 09:30:12", "[杭州市]顺丰速运 已收取快件", "揽收", "103")
IN_TRANSIT = kuaidi100_checkpoint("2026-11-22 21:12:05", "[杭州市]快件已发车，下一站【杭州转运中心】", "在途", "1002")


async def test_a_kuaidi100_pickup_refunds_early_like_a_native_first_moving_scan(settings, service_runner):
    async with platform(settings, service_runner) as p:
        nu = "SF1402918820461"
        rid = await p.new_return(tracking_no=nu)
        pickup = kuaidi100_param(nu, "1", [PICKED_UP, ORDERED])
        r = await p.warehouse.post(KUAIDI100_URL, content=kuaidi100_form(pickup, SALT)[0], headers=_form())
        assert r.status_code == 200 and r.json() == KUAIDI100_OK, r.text
        (refund,) = await p.wait_issued(rid)  # the same early refund a native picked_up scan gives
        assert refund["basis"] == "early_scan" and refund["amount"] == 4000

        again = await p.warehouse.post(KUAIDI100_URL, content=kuaidi100_form(pickup, SALT)[0], headers=_form())
        assert again.status_code == 200 and again.json() == KUAIDI100_OK  # a repeated push: nothing twice
        forged = await p.warehouse.post(KUAIDI100_URL, content=kuaidi100_form(pickup, "guess")[0], headers=_form())
        assert forged.status_code == 401 and "sign" in forged.json()["detail"]
        assert forged.json()["result"] is False and forged.json()["returnCode"] == "401"  # Kuaidi100 retries
        moving = kuaidi100_param(nu, "0", [IN_TRANSIT, PICKED_UP, ORDERED])  # the whole history again, + 1
        r = await p.warehouse.post(KUAIDI100_URL, content=kuaidi100_form(moving, SALT)[0], headers=_form())
        assert r.json() == KUAIDI100_OK

        await p.idle()
        scanned = values(await read_topic(p.settings.kafka_bootstrap, "parcels.scanned", expect=3))
        beijing = timezone(timedelta(hours=8))  # Kuaidi100's times carry no offset: they are Beijing time
        assert sorted(
            (datetime.fromisoformat(e["scanned_at"]), e["scan_code"], e["first_moving"]) for e in scanned
        ) == [
            (datetime(2026, 11, 22, 8, 2, 41, tzinfo=beijing), "accepted", False),
            (datetime(2026, 11, 22, 9, 30, 12, tzinfo=beijing), "picked_up", True),
            (datetime(2026, 11, 22, 21, 12, 5, tzinfo=beijing), "in_transit", False),
        ]
        assert {(e["return_id"], e["carrier"], e["tracking_no"]) for e in scanned} == {(str(rid), "shunfeng", nu)}
        assert len(await p.ledger(rid)) == 1
        await p.timeline(rid, ["parcel.scanned", "refund.issued"])


async def test_pushes_before_the_return_are_parked_then_matched_and_bad_ones_refused(settings, service_runner):
    own = warehouse_dev.dev_settings(kuaidi100_salts=[], aftership_webhook_secrets=[])  # the feeds off at first
    async with (
        service_runner(RETURNS, settings) as ret,
        service_runner(WAREHOUSE, settings, own) as wh,
        httpx.AsyncClient(base_url=wh.base_url, headers=READ) as client,
        httpx.AsyncClient(base_url=ret.base_url) as rc,
    ):
        off = kuaidi100_param("YT7514628834901", "1", [PICKED_UP])
        r = await client.post(KUAIDI100_URL, content=kuaidi100_form(off, SALT)[0], headers=_form())
        assert r.status_code == 503 and "RETURNFLOW_WAREHOUSE_KUAIDI100_SALTS" in r.json()["detail"]
        raw, headers = aftership_signed(aftership_body("1Z9", []), SECRET)
        r = await client.post(AFTERSHIP_URL, content=raw, headers=headers)
        assert r.status_code == 503 and "RETURNFLOW_WAREHOUSE_AFTERSHIP_WEBHOOK_SECRETS" in r.json()["detail"]
        on = warehouse_dev.dev_settings()  # the same settings object the running service reads
        own.kuaidi100_salts, own.aftership_webhook_secrets = on.kuaidi100_salts, on.aftership_webhook_secrets

        # Kuaidi100: refused with the field named, and in the answer Kuaidi100 reads as a failure
        good = kuaidi100_param("YT7514628834901", "1", [PICKED_UP], com="yuantong")
        no_nu = kuaidi100_param("x", "1", [PICKED_UP])
        del no_nu["lastResult"]["nu"]
        bad_time = kuaidi100_param("YT1", "1", [dict(PICKED_UP, ftime="yesterday", time="yesterday")])
        for param, field in [(no_nu, "param.lastResult.nu"), (bad_time, "param.lastResult.data.0.ftime")]:
            r = await client.post(KUAIDI100_URL, content=kuaidi100_form(param, SALT)[0], headers=_form())
            assert r.status_code == 422 and [f["field"] for f in r.json()["fields"]] == [field], r.text
            assert r.json()["result"] is False
        r = await client.post(KUAIDI100_URL, content=kuaidi100_form("{not json", SALT)[0], headers=_form())
        assert r.status_code == 422 and [f["field"] for f in r.json()["fields"]] == ["param"]
        r = await client.post(KUAIDI100_URL, content=b"sign=ABC", headers=_form())
        assert r.status_code == 422 and [f["field"] for f in r.json()["fields"]] == ["param"]
        body, _ = kuaidi100_form(good, SALT)
        r = await client.post(KUAIDI100_URL, content=body, headers={"content-type": "application/json"})
        assert r.status_code == 415
        r = await client.post(KUAIDI100_URL, content=body, headers=_form())
        assert r.json() == KUAIDI100_OK  # parked: the return is not known yet

        # AfterShip: a bad signature or payload refused; a good one recorded once, however often it comes
        ups = "1Z999AA10123456784"
        hook = aftership_body(
            ups,
            [
                aftership_checkpoint("2026-11-21T18:20:00-08:00", "Label created", "InfoReceived", "InfoReceived_001"),
                aftership_checkpoint("2026-11-22T09:30:00-08:00", "Picked up", "InTransit", "InTransit_002"),
            ],
        )
        raw, headers = aftership_signed(hook, "not-the-secret")
        r = await client.post(AFTERSHIP_URL, content=raw, headers=headers)
        assert r.status_code == 401 and "aftership-hmac-sha256" in r.json()["detail"]
        nameless = aftership_body(ups, hook["msg"]["checkpoints"])
        del nameless["msg"]["tracking_number"]
        raw, headers = aftership_signed(nameless, SECRET)
        r = await client.post(AFTERSHIP_URL, content=raw, headers=headers)
        assert r.status_code == 422 and [f["field"] for f in r.json()["fields"]] == ["msg.tracking_number"]
        raw, headers = aftership_signed(hook, SECRET)
        first = (await client.post(AFTERSHIP_URL, content=raw, headers=headers)).json()
        assert [x["status"] for x in first["recorded"]] == ["parked", "parked"] and first["duplicates"] == 0
        second = (await client.post(AFTERSHIP_URL, content=raw, headers=headers)).json()
        assert second["recorded"] == [] and second["duplicates"] == 2
        parked = (await client.get("/v1/warehouse/scans/parked")).json()["scans"]
        assert sorted(s["tracking_no"] for s in parked) == [ups, ups, "YT7514628834901"]

        # the returns become known: every parked checkpoint is matched and published, once
        rids = {}
        for tracking_no in (ups, "YT7514628834901"):
            raw, h = signed(return_body(tracking_no=tracking_no))
            rids[tracking_no] = (await rc.post("/v1/webhooks/generic/returns", content=raw, headers=h)).json()[
                "return_id"
            ]
        await wait_idle(ret, wh)
        scanned = values(await read_topic(settings.kafka_bootstrap, "parcels.scanned", expect=3))
        assert sorted((e["tracking_no"], e["carrier"], e["scan_code"], e["first_moving"]) for e in scanned) == [
            (ups, "ups", "accepted", False),
            (ups, "ups", "picked_up", True),
            ("YT7514628834901", "yuantong", "picked_up", True),
        ]
        assert {e["return_id"] for e in scanned} == set(rids.values())
        assert (await client.get("/v1/warehouse/scans/parked")).json()["scans"] == []
        aborted = dict(kuaidi100_param("YT7514628834901", "0", []), status="abort", message="3天查询无记录")
        r = await client.post(KUAIDI100_URL, content=kuaidi100_form(aborted, SALT)[0], headers=_form())
        assert r.json() == KUAIDI100_OK  # Kuaidi100 stopped watching: logged, nothing recorded
        assert await wh.runtime.pool.fetchval("SELECT count(*) FROM scans") == 3

        # the copy-paste examples of docs/couriers.md work as written (curl, md5sum, openssl)
        kuaidi100_example, aftership_example = await _doc_examples(wh.base_url)
        assert orjson.loads(kuaidi100_example) == KUAIDI100_OK
        assert [x["status"] for x in orjson.loads(aftership_example)["recorded"]] == ["matched"]  # the UPS return


async def _doc_examples(base_url: str) -> list[bytes]:
    """Run each shell example of docs/couriers.md against this service; what each printed."""
    text = (Path(__file__).parents[2] / "docs" / "couriers.md").read_text()
    outputs = []
    for script in re.findall(r"```sh\n(.*?)```", text, re.S):
        proc = await asyncio.create_subprocess_exec(
            "bash", "-ec", script.replace("http://127.0.0.1:8082", base_url), stdout=asyncio.subprocess.PIPE
        )
        out, _ = await proc.communicate()
        assert proc.returncode == 0, script
        outputs.append(out)
    return outputs


async def _equals(value, expected) -> bool:
    return await value == expected


def _form() -> dict[str, str]:
    return {"content-type": "application/x-www-form-urlencoded;charset=UTF-8"}


async def test_a_new_tracking_number_is_subscribed_and_kuaidi100s_pushes_arrive(settings, service_runner):
    async with serve_kuaidi100({"k-live"}) as (kuaidi100_url, sim):
        own = warehouse_dev.dev_settings(
            kuaidi100_key=SecretStr("k-live"),
            kuaidi100_callback_url="http://127.0.0.1:9/not-yet",  # the service's own address, set once it listens
            kuaidi100_poll_url=f"{kuaidi100_url}/poll",
            kuaidi100_poll_s=0.1,
            kuaidi100_retry_s=0.1,
        )
        sim.busy = 1  # Kuaidi100 busy at first: the subscription is asked again
        async with (
            service_runner(RETURNS, settings) as ret,
            service_runner(WAREHOUSE, settings, own) as wh,
            httpx.AsyncClient(base_url=ret.base_url) as rc,
        ):
            own.kuaidi100_callback_url = f"{wh.base_url}{KUAIDI100_URL}"
            nu = "SF1402918820461"
            raw, h = signed(return_body(tracking_no=nu))
            rid = (await rc.post("/v1/webhooks/generic/returns", content=raw, headers=h)).json()["return_id"]
            status = "SELECT status FROM kuaidi100_subscriptions WHERE tracking_no = $1"
            await wait_for(lambda: _equals(wh.runtime.pool.fetchval(status, nu), "subscribed"))  # asked twice
            assert sim.subscriptions[nu]["parameters"]["callbackurl"] == own.kuaidi100_callback_url
            assert sim.requests == 2

            answer = await sim.push(nu, "1", PICKED_UP)  # Kuaidi100 pushes, signed with the salt given
            assert answer.json() == KUAIDI100_OK
            await wait_idle(ret, wh)
            (scanned,) = values(await read_topic(settings.kafka_bootstrap, "parcels.scanned", expect=1))
            assert (scanned["return_id"], scanned["scan_code"], scanned["first_moving"]) == (rid, "picked_up", True)
