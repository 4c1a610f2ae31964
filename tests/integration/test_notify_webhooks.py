"""Merchant webhooks end to end on the real broker and PostgreSQL: notify started against a shops file with two
endpoints — a merchant's receiver (a real HTTP server verifying with the `standardwebhooks` library) that
answers 500 to each delivery's first attempt and 200 after, and a host that takes the connection and never
answers. Deliveries arrive signed, are retried with the same webhook-id, show in the GET with their attempts
and last error; the endpoint that never answers does not hold up the consumer or the other endpoint."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import httpx

from services.notify import SPEC
from tests.idle import wait_consumers_idle
from tests.integration.merchant_receiver import MerchantReceiver, endpoint_that_never_answers, serve_receiver
from tests.integration.notify_support import issued, notify_settings, publish, requested, wait_sms
from tests.kafkautil import wait_for
from tests.readers import READ

SECRET = "whsec_" + base64.b64encode(b"merchant-endpoint-key-0123").decode()


def shops_file(tmp_path: Path, good_url: str, down_url: str) -> Path:
    path = tmp_path / "shops.yaml"
    path.write_text(
        "shops:\n"
        "  shop-1:\n"
        "    name: Maple & Co\n"
        "    webhooks:\n"
        f"      - {{url: '{good_url}/returnflow', secret: {SECRET}, events: [return.requested, refund.paid]}}\n"
        f"      - {{url: '{down_url}/hooks', secret: {SECRET}}}\n"
    )
    return path


async def get_deliveries(base_url: str, **params: Any) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base_url, headers=READ) as client:
        r = await client.get("/v1/notify/shops/shop-1/webhooks/deliveries", params=params)
        assert r.status_code == 200, r.text
        return dict(r.json())


async def test_deliveries_arrive_signed_are_retried_and_recorded_and_a_dead_endpoint_holds_nothing_up(
    settings, service_runner, tmp_path
):
    receiver = MerchantReceiver(SECRET, fail_first=500)
    async with serve_receiver(receiver) as good_url, endpoint_that_never_answers() as (down_url, connections):
        runtime = settings.model_copy(update={"shops_file": shops_file(tmp_path, good_url, down_url)})
        # an attempt may take 20 s: if the consumer waited for one, it could not be idle in time below
        s = notify_settings(runtime, webhook_retry_base_s=0.2, webhook_retry_max_s=0.4, webhook_timeout_s=20.0)
        req = requested()
        rid = req.return_id
        paid = issued(rid)
        async with service_runner(SPEC, *s) as svc:
            await publish(s.kafka_bootstrap, [req])
            await publish(s.kafka_bootstrap, [paid])
            await wait_sms(s, 1, rid)

            # the consumer has consumed everything while the dead endpoint's attempts are still under way
            await wait_consumers_idle(svc)
            down = await svc.runtime.pool.fetch(
                "SELECT status, attempts, type FROM webhook_deliveries WHERE url = $1", f"{down_url}/hooks"
            )
            assert sorted(r["type"] for r in down) == ["refund.paid", "return.requested"]
            assert all(r["status"] in ("pending", "sending") for r in down)

            # the merchant's receiver got each delivery twice: refused (500), then taken (200) — the other
            # endpoint hanging meanwhile
            async def both_taken() -> bool:
                return all(
                    [r.answered for r in receiver.attempts_of(f"msg_{e.event_id.hex}")] == [500, 200]
                    for e in (req, paid)
                )

            await wait_for(both_taken, 20)
            assert connections, "the dead endpoint was attempted"
            assert all(r.verified for r in receiver.received), [r.error for r in receiver.received]
            first, second = receiver.attempts_of(f"msg_{paid.event_id.hex}")
            assert first.body == second.body  # the same bytes, the same webhook-id; signed again at each attempt
            assert int(second.headers["webhook-timestamp"]) >= int(first.headers["webhook-timestamp"])
            assert first.headers["content-type"] == "application/json"
            body = second.payload
            assert body["type"] == "refund.paid" and body["version"] == 1
            assert body["data"]["return_id"] == str(rid) and body["data"]["order_id"] == req.order_id
            assert body["data"]["platform_return_id"] == req.platform_return_id
            assert (body["data"]["amount"], body["data"]["currency"]) == (5000, "CNY")
            assert req.customer.phone[3:] not in second.body.decode()

            # the log: delivered after 2 attempts, the 500 kept as the last error
            async def recorded() -> dict[str, Any] | None:
                page = await get_deliveries(svc.base_url)
                mine = [d for d in page["items"] if d["url"] == f"{good_url}/returnflow"]
                return page if mine and all(d["status"] == "delivered" for d in mine) else None

            page = await wait_for(recorded, 10)
            good = {d["type"]: d for d in page["items"] if d["url"] == f"{good_url}/returnflow"}
            assert set(good) == {"return.requested", "refund.paid"}
            for d in good.values():
                assert d["attempts"] == 2 and d["last_status"] == 200
                assert d["last_error"] == "HTTP 500: merchant hiccup"
                assert d["next_attempt_at"] is None and d["delivered_at"] is not None
            assert good["refund.paid"]["webhook_id"] == f"msg_{paid.event_id.hex}"
            dead = [d for d in page["items"] if d["url"] == f"{down_url}/hooks"]
            assert len(dead) == 2 and all(d["status"] in ("pending", "sending") for d in dead)

            # paging (newest first) and filters
            first_page = await get_deliveries(svc.base_url, limit=3)
            assert len(first_page["items"]) == 3 and first_page["next_cursor"]
            rest = await get_deliveries(svc.base_url, limit=3, cursor=first_page["next_cursor"])
            assert len(rest["items"]) == 1 and rest["next_cursor"] is None
            ids = [d["id"] for d in first_page["items"] + rest["items"]]
            assert len(set(ids)) == 4
            delivered = await get_deliveries(svc.base_url, status="delivered", type="refund.paid")
            assert [d["url"] for d in delivered["items"]] == [f"{good_url}/returnflow"]

            async with httpx.AsyncClient(base_url=svc.base_url) as anonymous:
                r = await anonymous.get("/v1/notify/shops/shop-1/webhooks/deliveries")
                assert r.status_code == 401
                r = await anonymous.get(
                    "/v1/notify/shops/shop-1/webhooks/deliveries", headers=READ, params={"cursor": "x"}
                )
                assert r.status_code == 422 and r.json()["fields"][0]["field"] == "cursor"
