"""The Shopify adapter against the local Shopify Admin GraphQL API (services/refunds/dev/shopify_admin.py)
over real sockets: the documented refundCreate with @idempotent (the same key never makes a second refund),
userErrors over the refundable balance declined for good, THROTTLED and 429 waited out, 5xx retried, a
timeout after the refund was made learnt from the order's refunds without paying twice, a bad token named;
and the refunds service paying through it end to end."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.refunds.dev.shopify_admin import serve_shopify
from services.refunds.providers import build_gateway
from services.refunds.providers.shopify import (
    ShopifyGateway,
    decimal_amount,
    minor_units,
    order_gid,
    refund_mutation,
)
from services.refunds.settings import RefundsSettings
from tests.integration.money_path_support import platform

TOKEN = "shpat_test_adapter"
META = {"return_id": "r-1", "refund_id": "rf-1", "basis": "early_scan"}
ORDER = "gid://shopify/Order/1001"


def shopify(admin_url: str, token: str = TOKEN, **over) -> ShopifyGateway:
    return ShopifyGateway(admin_url, token, **{"timeout_s": 1.5, "attempts": 3, "backoff_s": 0.02, **over})


@given(st.integers(min_value=1, max_value=10**12), st.sampled_from(["CNY", "USD", "EUR", "JPY", "KRW"]))
def test_minor_units_convert_to_shopify_money_and_back_exactly(amount, currency):
    text = decimal_amount(amount, currency)
    assert minor_units(text, currency) == amount
    assert ("." in text) == (currency not in ("JPY", "KRW"))


def test_amounts_and_order_ids():
    assert [decimal_amount(a, "CNY") for a in (1, 10, 4000, 123456)] == ["0.01", "0.10", "40.00", "1234.56"]
    assert decimal_amount(1500, "JPY") == "1500"
    with pytest.raises(ValueError):
        minor_units("0.005", "USD")
    with pytest.raises(ValueError):
        decimal_amount(0, "USD")
    assert order_gid("1001") == ORDER and order_gid(ORDER) == ORDER
    assert order_gid("order-1") is None and order_gid("gid://shopify/Customer/1") is None


async def test_the_graphql_api_as_documented_token_validation_idempotent_replay_and_cost():
    async with serve_shopify(TOKEN) as s, httpx.AsyncClient(base_url=s.url) as c:
        await c.post("/_dev/orders", json={"id": 1001, "amount": "50.00", "currency": "USD"})
        sale = (await c.get("/_dev/orders/1001")).json()["transactions"][0]
        h = {"x-shopify-access-token": TOKEN}
        tx = {"orderId": ORDER, "parentId": sale["id"], "gateway": sale["gateway"], "kind": "REFUND", "amount": "12.00"}
        variables = {"input": {"orderId": ORDER, "note": "n", "transactions": [tx]}}
        path = "/admin/api/2026-01/graphql.json"
        first = await c.post(path, json={"query": refund_mutation("k-1"), "variables": variables}, headers=h)
        again = await c.post(path, json={"query": refund_mutation("k-1"), "variables": variables}, headers=h)
        refund = first.json()["data"]["refundCreate"]["refund"]
        assert refund["id"].startswith("gid://shopify/Refund/")
        assert refund["totalRefundedSet"]["presentmentMoney"] == {"amount": "12.00", "currencyCode": "USD"}
        assert again.json()["data"]["refundCreate"]["refund"]["id"] == refund["id"]  # replayed, not made again
        assert (await c.get("/_dev/stats")).json()["refunds"] == 1 and s.state.replays == 1
        cost = first.json()["extensions"]["cost"]
        assert cost["requestedQueryCost"] == 10 and cost["throttleStatus"]["maximumAvailable"] == 2000.0

        other = {"input": {**variables["input"], "transactions": [{**tx, "amount": "13.00"}]}}
        mismatch = await c.post(path, json={"query": refund_mutation("k-1"), "variables": other}, headers=h)
        assert mismatch.json()["errors"][0]["extensions"]["code"] == "IDEMPOTENCY_KEY_PARAMETER_MISMATCH"

        wrong_field = 'query { order(id: "gid://shopify/Order/1001") { totalPriceSomething } }'
        invalid = await c.post(path, json={"query": wrong_field}, headers=h)
        assert invalid.status_code == 200 and "totalPriceSomething" in invalid.json()["errors"][0]["message"]
        bad = await c.post(path, json={"query": refund_mutation("k-2"), "variables": variables}, headers={})
        assert bad.status_code == 401 and "Invalid API key or access token" in bad.json()["errors"]
        assert (await c.get("/_dev/stats")).json()["refunds"] == 1


async def test_paid_the_same_key_twice_is_one_refund_and_over_the_balance_declined_for_good():
    async with serve_shopify(TOKEN) as s, httpx.AsyncClient(base_url=s.url) as c:
        await c.post("/_dev/orders", json={"id": 1001, "amount": "50.00", "currency": "USD"})
        gw = shopify(s.admin_url)
        try:
            ok = await gw.refund("rf-a1", ORDER, 4000, "USD", META)
            assert ok.outcome == "paid" and ok.reference and ok.reference.startswith("gid://shopify/Refund/")
            again = await gw.refund("rf-a1", "1001", 4000, "USD", META)  # a second series, the numeric id
            assert again.outcome == "paid" and again.reference == ok.reference
            order = (await c.get("/_dev/orders/1001")).json()
            (refund,) = order["refunds"]
            assert "[returnflow:rf-a1]" in refund["note"] and "r-1" in refund["note"]
            assert refund["transactions"]["nodes"][0]["parentTransaction"]["id"] == order["transactions"][0]["id"]
            assert s.state.by_key.keys() == {"rf-a1"}  # sent with @idempotent(key:)

            before = s.state.requests
            over = await gw.refund("rf-a2", ORDER, 1001, "USD", META)
            assert over.outcome == "declined" and "greater than the refundable amount 10.00" in (over.error or "")
            assert s.state.requests == before + 2  # one query, one refundCreate: not retried
            assert len(s.state.refunds()) == 1

            other_currency = await gw.refund("rf-a3", ORDER, 100, "CNY", META)
            assert other_currency.outcome == "declined" and "paid in USD" in (other_currency.error or "")
            not_shopify = await gw.refund("rf-a4", "order-77", 100, "USD", META)
            assert not_shopify.outcome == "declined" and "order GID" in (not_shopify.error or "")
            missing = await gw.refund("rf-a5", "gid://shopify/Order/404", 100, "USD", META)
            assert missing.outcome == "declined" and "no order" in (missing.error or "")
        finally:
            await gw.close()


async def test_throttled_waits_for_the_cost_bucket_then_pays():
    async with serve_shopify(TOKEN, auto_order_amount=10**6) as s, httpx.AsyncClient(base_url=s.url) as c:
        # requestedQueryCost 10, currentlyAvailable 0, restoreRate 20/s: 0.5 s until it fits
        await c.post("/_dev/faults", json={"mode": "throttled", "target": "mutation", "restore_rate": 20})
        gw = shopify(s.admin_url)
        try:
            started = time.monotonic()
            r = await gw.refund("rf-b1", ORDER, 700, "CNY", META)
            assert r.outcome == "paid" and len(s.state.refunds()) == 1
            assert time.monotonic() - started >= 0.5
        finally:
            await gw.close()


async def test_429_is_retried_after_its_retry_after():
    async with serve_shopify(TOKEN, auto_order_amount=10**6) as s, httpx.AsyncClient(base_url=s.url) as c:
        await c.post("/_dev/faults", json={"mode": "rate_limit", "retry_after": 1})
        gw = shopify(s.admin_url)
        try:
            started = time.monotonic()
            r = await gw.refund("rf-c1", ORDER, 700, "CNY", META)
            assert r.outcome == "paid" and len(s.state.refunds()) == 1
            assert time.monotonic() - started >= 1.0
        finally:
            await gw.close()


async def test_5xx_is_retried_and_a_refund_never_answered_stays_unknown():
    async with serve_shopify(TOKEN, auto_order_amount=10**6) as s, httpx.AsyncClient(base_url=s.url) as c:
        await c.post("/_dev/faults", json={"mode": "error", "status": 502, "target": "mutation"})
        await c.post("/_dev/faults", json={"mode": "error", "status": 503, "target": "query"})
        gw = shopify(s.admin_url)
        try:
            r = await gw.refund("rf-d1", ORDER, 700, "CNY", META)
            assert r.outcome == "paid" and len(s.state.refunds()) == 1
            await c.post("/_dev/faults", json={"mode": "error", "status": 500, "target": "mutation", "count": 3})
            r = await gw.refund("rf-d2", ORDER, 700, "CNY", META)
            assert r.outcome == "unknown" and "HTTP 500" in (r.error or "")  # a refundCreate went out: never released
            await c.post("/_dev/faults", json={"mode": "error", "status": 503, "target": "query", "count": 3})
            r = await gw.refund("rf-d3", ORDER, 700, "CNY", META)
            assert r.outcome == "retryable"  # only the order query failed: nothing was sent
            # a refusal after a refundCreate of the same series went unanswered is not believed in that series
            await c.post("/_dev/faults", json={"mode": "error", "status": 502, "target": "mutation"})
            over = await gw.refund("rf-d4", ORDER, 10**6, "CNY", META)
            assert over.outcome == "unknown" and "greater than the refundable amount" in (over.error or "")
            final = await gw.refund("rf-d4", ORDER, 10**6, "CNY", META)  # the next series: nothing unanswered
            assert final.outcome == "declined" and len(s.state.refunds()) == 1
        finally:
            await gw.close()


async def test_a_timeout_after_the_refund_was_made_is_unknown_and_the_next_series_finds_it_paid():
    async with serve_shopify(TOKEN, auto_order_amount=10**6) as s, httpx.AsyncClient(base_url=s.url) as c:
        await c.post("/_dev/faults", json={"mode": "timeout", "target": "mutation", "delay_s": 4.0})
        gw = shopify(s.admin_url, attempts=1)
        try:
            first = await gw.refund("rf-e1", ORDER, 900, "CNY", META)
            assert first.outcome == "unknown" and "did not answer" in (first.error or "")
            assert len(s.state.refunds()) == 1  # made at Shopify, the answer lost
            later = await gw.refund("rf-e1", ORDER, 900, "CNY", META)  # the next series
            assert later.outcome == "paid" and later.reference == s.state.refunds()[0]["id"]
            assert len(s.state.refunds()) == 1 and s.state.replays == 0  # found on the order, not made again
        finally:
            await gw.close()
        # within one series: the next attempt's order query finds it
        await c.post("/_dev/faults", json={"mode": "timeout", "target": "mutation", "delay_s": 4.0})
        gw = shopify(s.admin_url, attempts=3)
        try:
            r = await gw.refund("rf-e2", ORDER, 300, "CNY", META)
            assert r.outcome == "paid" and len(s.state.refunds()) == 2
        finally:
            await gw.close()


async def test_an_api_version_without_idempotent_never_sends_a_lost_refund_again_in_the_series():
    async with (
        serve_shopify(TOKEN, auto_order_amount=10**6, api_version="2025-07") as s,
        httpx.AsyncClient(base_url=s.url) as c,
    ):
        await c.post("/_dev/faults", json={"mode": "timeout", "target": "mutation", "delay_s": 4.0})
        gw = shopify(s.admin_url)
        try:
            r = await gw.refund("rf-f1", ORDER, 500, "CNY", META)
            assert r.outcome == "paid" and len(s.state.refunds()) == 1  # found by the note's marker
            assert s.state.by_key == {}  # no @idempotent before 2026-01
        finally:
            await gw.close()


async def test_a_refund_failed_at_the_payment_gateway_is_declined_and_a_pending_one_unknown():
    async with serve_shopify(TOKEN, auto_order_amount=10**6) as s, httpx.AsyncClient(base_url=s.url) as c:
        await c.post("/_dev/faults", json={"mode": "failure", "target": "mutation"})
        await c.post("/_dev/faults", json={"mode": "pending", "target": "mutation"})
        gw = shopify(s.admin_url)
        try:
            failed = await gw.refund("rf-g1", ORDER, 500, "CNY", META)
            assert failed.outcome == "declined" and "CARD_DECLINED" in (failed.error or "") and failed.reference
            pending = await gw.refund("rf-g2", ORDER, 500, "CNY", META)
            assert pending.outcome == "unknown" and pending.reference  # never released
            again = await gw.refund("rf-g2", ORDER, 500, "CNY", META, pending.reference)
            assert again.outcome == "unknown" and again.reference == pending.reference
            assert len(s.state.refunds()) == 2  # read back from the order, not made again
        finally:
            await gw.close()


async def test_a_bad_token_is_a_final_error_naming_the_setting():
    async with serve_shopify(TOKEN, auto_order_amount=10**6) as s:
        gw = shopify(s.admin_url, token="shpat_wrong")
        try:
            r = await gw.refund("rf-h1", ORDER, 500, "CNY", META)
            assert r.outcome == "declined" and "RETURNFLOW_REFUNDS_SHOPIFY_ACCESS_TOKEN" in (r.error or "")
            assert "shpat_wrong" not in (r.error or "")
            assert s.state.requests == 1 and s.state.refunds() == []  # not retried, nothing made
        finally:
            await gw.close()


def test_the_setting_builds_the_adapter_and_a_missing_one_is_named():
    with pytest.raises(RuntimeError) as missing:
        build_gateway(RefundsSettings(gateway="shopify"))
    assert "RETURNFLOW_REFUNDS_SHOPIFY_ADMIN_URL" in str(missing.value)
    assert "RETURNFLOW_REFUNDS_SHOPIFY_ACCESS_TOKEN" in str(missing.value)
    with pytest.raises(ValueError) as bad_url:
        build_gateway(
            RefundsSettings(gateway="shopify", shopify_admin_url="https://x.myshopify.com", shopify_access_token="t")
        )
    assert "RETURNFLOW_REFUNDS_SHOPIFY_ADMIN_URL" in str(bad_url.value)
    gw = build_gateway(
        RefundsSettings(
            gateway="shopify",
            shopify_admin_url="https://x.myshopify.com/admin/api/2026-01/graphql.json",
            shopify_access_token="shpat_x",
        )
    )
    assert isinstance(gw, ShopifyGateway) and gw.idempotent


async def test_the_refunds_service_pays_through_shopify(settings, service_runner):
    async with serve_shopify(TOKEN, auto_order_amount=5000) as s:
        over = {"shopify_admin_url": s.admin_url, "shopify_access_token": TOKEN}
        async with platform(settings, service_runner, gateway="shopify", **over) as p:
            tracking = f"SF-{uuid.uuid4().hex[:8]}"
            rid = await p.new_return(tracking_no=tracking, order_id="gid://shopify/Order/7001")
            assert (await p.scan(tracking, "picked_up")).status_code == 202
            (refund,) = await p.wait_issued(rid)
            key = await p.refunds_pool.fetchval(
                "SELECT idempotency_key FROM refunds WHERE refund_id = $1", refund["refund_id"]
            )
            (made,) = s.state.orders["gid://shopify/Order/7001"]["refunds"]
            assert made["totalRefundedSet"]["presentmentMoney"] == {"amount": "40.00", "currencyCode": "CNY"}
            assert f"[returnflow:{key}]" in made["note"] and str(rid) in made["note"]
