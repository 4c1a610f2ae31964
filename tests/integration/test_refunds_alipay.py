"""The Alipay adapter against the local Alipay gateway (services/refunds/dev/alipay_server.py) over real
sockets: RSA2 signatures both ways, out_request_no replayed without moving money twice, declines, a
system error / 5xx / 429 retried, a timeout learnt with alipay.trade.fastpay.refund.query, an answer not
signed by Alipay never believed; and the refunds service paying through it end to end."""

from __future__ import annotations

import uuid
from functools import cache

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from services.refunds.dev.alipay_server import serve_alipay
from services.refunds.providers.alipay import AlipayGateway, fen, yuan
from tests.integration.money_path_support import platform

APP_ID = "2021000000000001"
META = {"return_id": "r-1", "refund_id": "rf-1", "basis": "early_scan"}


@cache
def keys() -> tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey, rsa.RSAPrivateKey]:
    """The merchant's app key, Alipay's key, and a stranger's (made once per test session)."""
    return tuple(rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(3))  # type: ignore[return-value]


def pem_private(k: rsa.RSAPrivateKey) -> str:
    return k.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def pem_public(k: rsa.RSAPrivateKey) -> str:
    return (
        k.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def alipay(url: str, app_key: rsa.RSAPrivateKey | None = None, alipay_key: rsa.RSAPrivateKey | None = None):
    app, ali, _ = keys()
    return AlipayGateway(
        url,
        APP_ID,
        pem_private(app_key or app),
        pem_public(alipay_key or ali),
        timeout_s=1.5,
        attempts=3,
        backoff_s=0.02,
    )


def local(**over):
    app, ali, _ = keys()
    return serve_alipay(APP_ID, app.public_key(), ali, **over)


def test_fen_and_yuan_convert_exactly():
    assert [yuan(a, "CNY") for a in (1, 10, 4000, 123456)] == ["0.01", "0.10", "40.00", "1234.56"]
    assert [fen(t) for t in ("0.01", "0.1", "40", "1234.56")] == [1, 10, 4000, 123456]


async def test_paid_replayed_by_out_request_no_and_declined_above_the_trade():
    async with local() as s, httpx.AsyncClient() as c:
        base = s.url.removesuffix("/gateway.do")
        await c.post(f"{base}/_dev/trades", json={"out_trade_no": "order-a", "total_fen": 5000})
        gw = alipay(s.url)
        try:
            first = await gw.refund("rf-a1", "order-a", 4000, "CNY", META)
            assert first.outcome == "paid" and first.reference and first.reference.isdigit()
            again = await gw.refund("rf-a1", "order-a", 4000, "CNY", META)  # fund_change N, confirmed by the query
            assert again.outcome == "paid"
            assert s.state.refunds == {("order-a", "rf-a1"): 4000} and s.state.trades["order-a"]["refunded"] == 4000
            over = await gw.refund("rf-a2", "order-a", 1001, "CNY", META)
            assert over.outcome == "declined" and "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL" in (over.error or "")
            other = await gw.refund("rf-a1", "order-a", 3999, "CNY", META)  # same out_request_no, other amount
            assert other.outcome == "unknown" and "DISCORDANT" in (other.error or "")
            missing = await gw.refund("rf-a3", "order-none", 100, "CNY", META)
            assert missing.outcome == "declined" and "TRADE_NOT_EXIST" in (missing.error or "")
            assert (await gw.refund("rf-a4", "order-a", 100, "USD", META)).outcome == "declined"
        finally:
            await gw.close()


async def test_a_wrong_app_key_is_refused_and_an_answer_not_signed_by_alipay_is_not_believed():
    _, _, stranger = keys()
    async with local(auto_trade_fen=10**6) as s:
        wrong_app = alipay(s.url, app_key=stranger)
        wrong_alipay = alipay(s.url, alipay_key=stranger)
        try:
            refused = await wrong_app.refund("rf-b1", "order-b", 100, "CNY", META)
            assert refused.outcome == "retryable" and "isv.invalid-signature" in (refused.error or "")
            assert s.state.refunds == {}
            unbelieved = await wrong_alipay.refund("rf-b2", "order-b", 100, "CNY", META)
            assert unbelieved.outcome == "unknown" and "not believed" in (unbelieved.error or "")  # never released
        finally:
            await wrong_app.close()
            await wrong_alipay.close()


async def test_system_error_5xx_and_429_are_retried_under_the_same_out_request_no():
    async with local(auto_trade_fen=10**6) as s, httpx.AsyncClient() as c:
        base = s.url.removesuffix("/gateway.do")
        for fault in ({"mode": "system_error"}, {"mode": "http_error", "status": 502}):
            await c.post(f"{base}/_dev/faults", json=fault)
        gw = alipay(s.url)
        try:
            r = await gw.refund("rf-c1", "order-c", 700, "CNY", META)
            assert r.outcome == "paid" and s.state.refunds == {("order-c", "rf-c1"): 700}
            await c.post(f"{base}/_dev/faults", json={"mode": "rate_limit", "retry_after": 0})
            assert (await gw.refund("rf-c2", "order-c", 300, "CNY", META)).outcome == "paid"
        finally:
            await gw.close()


async def test_a_timeout_is_learnt_with_the_refund_query_without_refunding_twice():
    async with local(auto_trade_fen=10**6) as s, httpx.AsyncClient() as c:
        await c.post(s.url.removesuffix("/gateway.do") + "/_dev/faults", json={"mode": "timeout", "delay_s": 4.0})
        gw = alipay(s.url)
        try:
            r = await gw.refund("rf-d1", "order-d", 900, "CNY", META)
            assert r.outcome == "paid"  # the refund query found it
            assert s.state.refunds == {("order-d", "rf-d1"): 900} and s.state.trades["order-d"]["refunded"] == 900
        finally:
            await gw.close()


async def test_the_refunds_service_pays_through_alipay(settings, service_runner):
    app, ali, _ = keys()
    async with local(auto_trade_fen=10**6) as s:
        over = {
            "alipay_gateway_url": s.url,
            "alipay_app_id": APP_ID,
            "alipay_app_private_key": pem_private(app),
            "alipay_public_key": pem_public(ali),
        }
        async with platform(settings, service_runner, gateway="alipay", **over) as p:
            tracking = f"SF-{uuid.uuid4().hex[:8]}"
            rid = await p.new_return(tracking_no=tracking, order_id="order-ali-1")
            assert (await p.scan(tracking, "picked_up")).status_code == 202
            (refund,) = await p.wait_issued(rid)
            key = await p.refunds_pool.fetchval(
                "SELECT idempotency_key FROM refunds WHERE refund_id = $1", refund["refund_id"]
            )
            assert s.state.refunds == {("order-ali-1", key[:64]): 4000}  # 40.00 yuan to the order's trade
