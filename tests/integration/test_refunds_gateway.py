"""The simulated PSP and the gateway adapter over real sockets: idempotency semantics, retries with
backoff, definitive refusals, and an unknown outcome that never becomes a second payment."""

from __future__ import annotations

import asyncio

import httpx

from services.refunds.dev.gateway_sim import serve_gateway
from services.refunds.gateway import HttpGateway

KEY = "sk_test_x"


def gateway(url: str, **over) -> HttpGateway:
    return HttpGateway(url, KEY, **{"timeout_s": 1.5, "attempts": 3, "backoff_s": 0.02, **over})


async def test_psp_semantics_same_key_same_result_different_amount_refused():
    async with serve_gateway(api_key=KEY) as url, httpx.AsyncClient(base_url=url) as c:
        h = {"authorization": f"Bearer {KEY}", "idempotency-key": "k1"}
        body = {"payment_id": "order-1", "amount": 100, "currency": "CNY"}
        first = await c.post("/v1/refunds", json=body, headers=h)
        again = await c.post("/v1/refunds", json=body, headers=h)
        assert first.status_code == 201 and again.status_code == 200
        assert again.headers["idempotent-replayed"] == "true" and again.json() == first.json()
        other = await c.post("/v1/refunds", json={**body, "amount": 101}, headers=h)
        assert other.status_code == 422 and other.json()["error"]["type"] == "idempotency_error"
        assert (await c.post("/v1/refunds", json=body, headers={"authorization": f"Bearer {KEY}"})).status_code == 400
        assert (await c.post("/v1/refunds", json=body, headers={**h, "authorization": "Bearer no"})).status_code == 401
        assert len((await c.get("/v1/refunds", params={"payment_id": "order-1"})).json()["data"]) == 1


async def test_adapter_retries_5xx_and_keeps_connections_alive():
    async with serve_gateway(api_key=KEY) as url, httpx.AsyncClient(base_url=url) as c:
        await c.post("/_sim/faults", json={"mode": "error", "status": 503, "count": 2})
        # 48 requests at once to a server in this event loop: a generous timeout, so that a busy machine
        # adds no timeout retries to the count (seen: 82 requests at load 16 with 0.3 s)
        gw = gateway(url, timeout_s=10.0)
        try:
            r = await gw.refund("rf-1", "order-1", 500, "CNY", {})
            assert r.ok and r.reference and r.reference.startswith("re_")
            results = await asyncio.gather(*(gw.refund(f"rf-{i}", "o", 1, "CNY", {}) for i in range(2, 50)))
            assert all(x.ok for x in results)
            assert (await c.get("/_sim/stats")).json() == {"requests": 51, "refunds": 49, "keys": 49}
        finally:
            await gw.close()


async def test_unknown_outcome_is_retryable_and_a_later_series_pays_once():
    async with serve_gateway(api_key=KEY) as url, httpx.AsyncClient(base_url=url) as c:
        await c.post("/_sim/faults", json={"mode": "timeout", "count": 3, "delay_s": 4.0})
        gw = gateway(url)
        try:
            first = await gw.refund("rf-9", "order-9", 700, "CNY", {})
            assert not first.ok and first.retryable and "timed out" in (first.error or "")
            later = await gw.refund("rf-9", "order-9", 700, "CNY", {})
            assert later.ok
            assert len((await c.get("/v1/refunds", params={"payment_id": "order-9"})).json()["data"]) == 1
            declined = await gw.refund("rf-9", "order-9", 701, "CNY", {})  # same key, other amount
            assert not declined.ok and not declined.retryable and "422" in (declined.error or "")
        finally:
            await gw.close()


async def test_adapter_reports_an_unreachable_gateway_as_retryable():
    gw = gateway("http://127.0.0.1:9", attempts=2)
    try:
        r = await gw.refund("rf-x", "o", 1, "CNY", {})
        assert not r.ok and r.retryable and "unreachable" in (r.error or "")
    finally:
        await gw.close()


async def test_a_kept_alive_connection_the_gateway_closed_is_replaced_without_a_failed_attempt():
    async with serve_gateway(api_key=KEY, keep_alive_s=1) as url, httpx.AsyncClient(base_url=url) as c:
        gw = gateway(url, attempts=1)
        try:
            assert (await gw.refund("rf-a", "o", 1, "CNY", {})).ok
            await asyncio.sleep(1.5)  # the server closes the idle connection
            assert (await gw.refund("rf-b", "o", 1, "CNY", {})).ok
            assert (await c.get("/_sim/stats")).json()["refunds"] == 2
        finally:
            await gw.close()
