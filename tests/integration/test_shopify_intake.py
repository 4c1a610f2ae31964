"""Shopify's returns webhooks as Shopify sends them, over real HTTP, with the order read from the local Shopify
Admin API (services/returns/dev/shopify_admin.py): returns/request accepted with the order's prices;
returns/decline and returns/close cancel it; a wrong topic, a bad HMAC and an unknown shop are refused;
a throttled Admin API is waited for; an Admin API that is down answers 503 and Shopify's redelivery is
accepted once; a customer without a phone is accepted and notify records its SMS skipped (no_phone)."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson

from services.notify import SPEC as NOTIFY
from services.returns import SPEC as RETURNS
from services.returns.dev.shopify_admin import LocalShopifyAdmin, serve_shopify_admin
from services.returns.settings import ReturnsSettings
from tests.idle import wait_idle
from tests.integration.notify_support import notify_settings
from tests.kafkautil import read_topic, values, wait_for
from tests.readers import READ
from tests.shopify import DOMAIN, GLOBAL_SECRET, ORDER, REQUEST, SHOP_SECRET, TOKEN, request_payload, shopify_headers

URL = "/v1/webhooks/shopify/returns"


def shops_yaml(admin_url: str) -> str:
    return f"""shops:
  maple:
    name: Maple & Co
    timezone: America/Los_Angeles
    platform:
      kind: shopify
      shopify:
        domain: {DOMAIN}
        access_token: {TOKEN}
        webhook_secret: {SHOP_SECRET.decode()}
        api_base_url: {admin_url}
"""


class Shop:
    def __init__(self, client: httpx.AsyncClient, admin: LocalShopifyAdmin, svc: Any) -> None:
        self.client, self.admin, self.svc = client, admin, svc

    async def post(self, payload: dict[str, Any] | bytes, **headers: Any) -> httpx.Response:
        body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        return await self.client.post(URL, content=body, headers=shopify_headers(body, **headers))

    async def add_order(self, order: dict[str, Any] = ORDER) -> None:
        async with httpx.AsyncClient(base_url=self.admin.url) as a:
            assert (await a.post("/_dev/orders", json=order)).status_code == 204

    async def fault(self, **fault: Any) -> None:
        async with httpx.AsyncClient(base_url=self.admin.url) as a:
            assert (await a.post("/_dev/faults", json=fault)).status_code == 204

    async def clear_faults(self) -> None:
        async with httpx.AsyncClient(base_url=self.admin.url) as a:
            await a.delete("/_dev/faults")

    def answers(self) -> dict[str, int]:
        return dict(self.admin.state.answers)

    async def count_returns(self) -> int:
        n: int = await self.svc.runtime.pool.fetchval("SELECT count(*) FROM returns")
        return n


def with_shops(settings: Any, tmp_path: Path, admin_url: str) -> Any:
    path = tmp_path / "shops.yaml"
    path.write_text(shops_yaml(admin_url))
    return settings.model_copy(update={"shops_file": path})


@contextlib.asynccontextmanager
async def shopify_shop(
    settings: Any, service_runner: Any, tmp_path: Path, restore_rate: float = 1000.0, budget_s: float = 4.0
) -> AsyncIterator[Shop]:
    async with serve_shopify_admin(TOKEN, restore_rate=restore_rate) as admin:
        s = with_shops(settings, tmp_path, admin.url)
        returns_settings = ReturnsSettings(shopify_admin_budget_s=budget_s, shopify_admin_attempt_timeout_s=1.5)
        async with (
            service_runner(RETURNS, s, returns_settings) as svc,
            httpx.AsyncClient(base_url=svc.base_url, headers=READ) as client,
        ):
            shop = Shop(client, admin, svc)
            await shop.add_order()
            yield shop


async def test_a_documented_returns_request_is_accepted_with_the_orders_prices_and_customer(
    settings, service_runner, tmp_path
):
    async with shopify_shop(settings, service_runner, tmp_path) as shop:
        r = await shop.post(REQUEST, webhook_id="wh-1")
        assert r.status_code == 202, r.text
        rid = r.json()["return_id"]
        got = (await shop.client.get(f"/v1/returns/{rid}")).json()
        assert (got["shop_id"], got["platform"], got["platform_return_id"], got["order_id"]) == (
            "maple",
            "shopify",
            "9001",
            "450789469",
        )
        assert (got["currency"], got["paid_total"]) == ("USD", 5990)
        assert [(x["sku"], x["qty"], x["unit_price"], x["reason"]) for x in got["lines"]] == [
            ("TEE-S", 2, 1995, "size_too_small")
        ]
        assert got["customer"]["locale"] == "en" and got["customer"]["phone"] != "+14155550123"  # masked
        (event,) = values(await read_topic(settings.kafka_bootstrap, "returns.requested", expect=1))
        assert event["customer"] == {
            "id": "207119551",
            "phone": "+14155550123",
            "locale": "en",
            "timezone": "America/Los_Angeles",  # the shops file's time zone for the shop
        }
        assert event["payment_reference"] == "gid://shopify/Order/450789469"  # what Shopify refunds go back to
        assert shop.answers() == {"200": 1}
        # Shopify delivers it again (same X-Shopify-Webhook-Id): the same return, the order not read again
        again = await shop.post(REQUEST, webhook_id="wh-1")
        assert again.status_code == 200 and again.json() == {**r.json(), "duplicate": True}
        # another return of the same order: read from the cache
        assert (await shop.post(request_payload(9002))).status_code == 202
        assert shop.answers() == {"200": 1}
        assert await shop.count_returns() == 2


async def test_decline_and_close_cancel_the_return_by_the_shop(settings, service_runner, tmp_path):
    async with shopify_shop(settings, service_runner, tmp_path) as shop:
        declined = (await shop.post(request_payload(9101))).json()["return_id"]
        closed = (await shop.post(request_payload(9102))).json()["return_id"]
        decline = {
            "id": 9101,
            "admin_graphql_api_id": "gid://shopify/Return/9101",
            "status": "declined",
            "decline": {"reason": "return_period_ended", "note": "Bought 90 days ago"},
        }
        r = await shop.post(decline, topic="returns/decline", webhook_id="wh-decline")
        assert r.status_code == 202, r.text
        assert r.json() == {"return_id": declined, "event": "return.cancelled", "duplicate": False}
        again = await shop.post(decline, topic="returns/decline", webhook_id="wh-decline")
        assert again.status_code == 200 and again.json()["duplicate"] is True
        close = {"id": 9102, "admin_graphql_api_id": "gid://shopify/Return/9102", "status": "closed"}
        assert (await shop.post(close, topic="returns/close")).status_code == 202
        for rid, why in ((declined, "declined in Shopify: return_period_ended — Bought 90 days ago"), (closed, None)):
            tl = (await shop.client.get(f"/v1/returns/{rid}/timeline")).json()
            assert tl["status"] == "cancelled"
            assert [e["type"] for e in tl["entries"]] == ["return.requested", "return.cancelled"]
            assert tl["entries"][1]["summary"].startswith("Return cancelled by shop")
            if why:
                assert why in tl["entries"][1]["summary"]
        events = values(await read_topic(settings.kafka_bootstrap, "returns.cancelled", expect=2))
        assert {e["cancelled_by"] for e in events} == {"shop"} and len(events) == 2
        # a decline for a return not requested here (yet): 404, so Shopify delivers it again later
        unknown = {"id": 9199, "status": "declined", "decline": {"reason": "final_sale"}}
        missing = await shop.post(unknown, topic="returns/decline")
        assert missing.status_code == 404 and "9199" in missing.json()["detail"]


async def test_wrong_topic_bad_hmac_and_unknown_shop_are_refused_naming_what_is_wrong(
    settings, service_runner, tmp_path
):
    async with shopify_shop(settings, service_runner, tmp_path) as shop:
        for topic in ("orders/create", "returns/approve", ""):
            r = await shop.post(REQUEST, topic=topic)
            assert r.status_code == 400, topic
            assert r.json()["fields"][0]["field"] == "X-Shopify-Topic"
            assert "returns/request" in r.json()["detail"]
        bad = await shop.post(REQUEST, secret=b"not-the-secret")
        assert bad.status_code == 401 and "signature" in bad.json()["detail"]
        # the shop has its own webhook secret: the global one is not enough for it
        assert (await shop.post(REQUEST, secret=GLOBAL_SECRET)).status_code == 401
        # a shop not in the shops file: checked with the global secret, but a request needs its access token
        other = await shop.post(REQUEST, secret=GLOBAL_SECRET, domain="stranger.myshopify.com")
        assert other.status_code == 422, other.text
        assert other.json()["fields"][0]["field"] == "X-Shopify-Shop-Domain"
        assert "shops file" in other.json()["detail"]
        assert (await shop.post(REQUEST, secret=SHOP_SECRET, domain="stranger.myshopify.com")).status_code == 401
        # decline/close need no Admin API: a shop outside the file may send them (its returns are by domain)
        decline = {"id": 1, "status": "declined"}
        r = await shop.post(decline, topic="returns/decline", secret=GLOBAL_SECRET, domain="stranger.myshopify.com")
        assert r.status_code == 404 and "stranger.myshopify.com" in r.json()["detail"]
        # a line item that is not on the order is named
        wrong_line = copy.deepcopy(REQUEST)
        wrong_line["return_line_items"][0]["fulfillment_line_item"]["line_item"] = {"id": 1}
        r = await shop.post(wrong_line)
        assert r.status_code == 422
        assert r.json()["fields"][0]["field"] == "return_line_items.0.fulfillment_line_item.line_item.id"
        unknown_order = await shop.post(request_payload(9301, order_id=777))
        assert unknown_order.status_code == 422 and unknown_order.json()["fields"][0]["field"] == "order.id"
        assert await shop.count_returns() == 0


async def test_a_throttled_or_rate_limited_admin_api_is_waited_for(settings, service_runner, tmp_path):
    # restore 1,000 points/s: the 310-point query is affordable again ~0.3 s after the bucket was emptied
    async with shopify_shop(settings, service_runner, tmp_path, restore_rate=1000.0) as shop:
        await shop.fault(mode="throttle")
        r = await shop.post(request_payload(9401))
        assert r.status_code == 202, r.text
        assert shop.answers() == {"THROTTLED": 1, "200": 1}
        await shop.add_order({**ORDER, "id": 450789470})
        await shop.fault(mode="rate_limit", retry_after=0.3)
        await shop.fault(mode="error", status=502)
        r = await shop.post(request_payload(9402, order_id=450789470))
        assert r.status_code == 202, r.text
        assert shop.answers() == {"THROTTLED": 1, "200": 2, "429": 1, "502": 1}


async def test_admin_api_down_answers_503_and_the_redelivery_is_accepted_once(settings, service_runner, tmp_path):
    async with shopify_shop(settings, service_runner, tmp_path, budget_s=1.0) as shop:
        await shop.fault(mode="error", status=503, count=1000)
        body = orjson.dumps(request_payload(9501))
        headers = shopify_headers(body, webhook_id="wh-down")
        r = await shop.client.post(URL, content=body, headers=headers)
        assert r.status_code == 503, r.text
        assert int(r.headers["retry-after"]) >= 1 and "Shopify Admin API" in r.json()["detail"]
        assert await shop.count_returns() == 0
        tries = shop.answers()["503"]
        assert tries >= 2  # retried with backoff inside the budget
        await shop.clear_faults()
        # Shopify's redelivery (the same body and webhook id), twice: accepted once
        first = await shop.client.post(URL, content=body, headers=headers)
        second = await shop.client.post(URL, content=body, headers=headers)
        assert (first.status_code, second.status_code) == (202, 200)
        assert first.json()["return_id"] == second.json()["return_id"]
        assert await shop.count_returns() == 1
        await wait_idle(shop.svc)
        assert len(await read_topic(settings.kafka_bootstrap, "returns.requested", expect=1)) == 1
        # a wrong access token is a setting to fix: 503 naming it (Shopify delivers again once it is fixed)
        shop.admin.state.access_token = "shpat_rotated"
        r = await shop.post(request_payload(9502, order_id=450789470))
        assert r.status_code == 503 and "access_token" in r.json()["detail"]


async def test_a_customer_without_a_phone_is_accepted_and_notify_skips_the_sms(settings, service_runner, tmp_path):
    setup = notify_settings(settings)
    async with (
        shopify_shop(setup.settings, service_runner, tmp_path) as shop,
        service_runner(NOTIFY, *setup) as notify,
        httpx.AsyncClient(base_url=notify.base_url, headers=READ) as notify_client,
    ):
        await shop.add_order({**ORDER, "id": 450789471, "customer": {"id": 5, "phone": None, "locale": "en"}})
        r = await shop.post(request_payload(9601, order_id=450789471))
        assert r.status_code == 202, r.text
        rid = r.json()["return_id"]
        assert (await shop.client.get(f"/v1/returns/{rid}")).json()["customer"]["phone"] is None

        async def skipped() -> list[dict[str, Any]] | None:
            sms = (await notify_client.get(f"/v1/returns/{rid}/sms")).json()["messages"]
            step = [m for m in sms if m["step"] == "requested"]
            return step if step and step[0]["status"] == "suppressed" else None

        (message,) = await wait_for(skipped)
        assert message["reason"] == "no_phone" and message["phone_masked"] == ""

        async def on_timeline() -> list[dict[str, Any]] | None:
            entries = (await shop.client.get(f"/v1/returns/{rid}/timeline")).json()["entries"]
            found = [e for e in entries if e["type"] == "sms.suppressed"]
            return found or None

        (entry,) = await wait_for(on_timeline)
        assert entry["summary"] == "SMS for requested not sent: no_phone"
        assert setup.sms_file.exists() is False or all(
            orjson.loads(x)["return_id"] != rid for x in setup.sms_file.read_bytes().splitlines() if x.strip()
        )
