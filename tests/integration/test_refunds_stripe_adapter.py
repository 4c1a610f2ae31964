"""The Stripe adapter against the local Stripe (services/refunds/dev/stripe_server.py) over real sockets:
the documented request (form-encoded, Bearer key, Idempotency-Key), idempotent replay, declines, 429 with
Retry-After and 5xx retried, a timeout left unknown and learnt by replaying the key, a pending refund read
back with GET /v1/refunds/{id}, and the signed refund webhooks."""

from __future__ import annotations

import time

import httpx
import orjson
import pytest

from services.refunds.dev.stripe_server import serve_stripe
from services.refunds.gateway import WebhookRefused
from services.refunds.providers.stripe import StripeGateway, sign_webhook

KEY = "sk_test_adapter"
META = {"return_id": "r-1", "refund_id": "rf-1", "basis": "early_scan"}


def stripe(url: str, **over) -> StripeGateway:
    return StripeGateway(url, KEY, "whsec_t", **{"timeout_s": 1.5, "attempts": 3, "backoff_s": 0.02, **over})


async def test_the_refunds_api_as_documented_bearer_form_idempotency_replay_and_reuse_refused():
    async with serve_stripe(api_key=KEY) as s, httpx.AsyncClient(base_url=s.url) as c:
        await c.post("/_dev/charges", json={"id": "pi_A", "amount": 5000})
        h = {"authorization": f"Bearer {KEY}", "idempotency-key": "k1"}
        form = {"payment_intent": "pi_A", "amount": "1200", "metadata[refund_id]": "rf-1"}
        first = await c.post("/v1/refunds", data=form, headers=h)
        again = await c.post("/v1/refunds", data=form, headers=h)
        assert first.status_code == 200 and first.json()["status"] == "succeeded"
        assert first.json()["amount"] == 1200 and first.json()["metadata"] == {"refund_id": "rf-1"}
        assert again.headers["idempotent-replayed"] == "true" and again.json() == first.json()
        other = await c.post("/v1/refunds", data={**form, "amount": "1300"}, headers=h)
        assert other.status_code == 400 and other.json()["error"]["type"] == "idempotency_error"
        bad = await c.post("/v1/refunds", data=form, headers={**h, "authorization": "Bearer sk_test_wrong_key_123"})
        assert bad.status_code == 401 and "Invalid API Key" in bad.json()["error"]["message"]
        neither = await c.post("/v1/refunds", data={"amount": "1"}, headers={**h, "idempotency-key": "k2"})
        assert neither.status_code == 400 and neither.json()["error"]["param"] == "payment_intent"
        listed = await c.get(
            "/v1/refunds", params={"payment_intent": "pi_A"}, headers={"authorization": f"Bearer {KEY}"}
        )
        assert len(listed.json()["data"]) == 1


async def test_paid_and_an_amount_above_the_charge_declined_for_good():
    async with serve_stripe(api_key=KEY) as s, httpx.AsyncClient(base_url=s.url) as c:
        await c.post("/_dev/charges", json={"id": "pi_B", "amount": 3000})
        gw = stripe(s.url)
        try:
            ok = await gw.refund("rf-b1", "pi_B", 2000, "CNY", META)
            assert ok.outcome == "paid" and ok.reference and ok.reference.startswith("re_")
            over = await gw.refund("rf-b2", "pi_B", 1001, "CNY", META)
            assert over.outcome == "declined" and "amount_too_large" in (over.error or "")
            unknown_payment = await gw.refund("rf-b3", "pi_nope", 10, "CNY", META)
            assert unknown_payment.outcome == "declined" and "resource_missing" in (unknown_payment.error or "")
            not_stripe = await gw.refund("rf-b4", "order-77", 10, "CNY", META)
            assert not_stripe.outcome == "declined" and "payment_reference" in (not_stripe.error or "")
            assert s.state.charges["pi_B"]["refunded"] == 2000
        finally:
            await gw.close()


async def test_429_after_its_retry_after_and_5xx_are_retried_under_the_same_key():
    async with serve_stripe(api_key=KEY, auto_charge_amount=10**9) as s, httpx.AsyncClient(base_url=s.url) as c:
        await c.post("/_dev/faults", json={"mode": "rate_limit", "retry_after": 1})
        await c.post("/_dev/faults", json={"mode": "error", "status": 500})
        gw = stripe(s.url)
        try:
            started = time.monotonic()
            r = await gw.refund("rf-c1", "pi_C", 700, "CNY", META)
            assert r.outcome == "paid"
            assert time.monotonic() - started >= 1.0  # Retry-After: 1 was honoured
            assert (await c.get("/_dev/stats")).json() == {"requests": 3, "refunds": 1, "replays": 0}
            await c.post("/_dev/faults", json={"mode": "error", "status": 503, "count": 3})
            r = await gw.refund("rf-c2", "pi_C", 700, "CNY", META)
            assert r.outcome == "unknown" and "api_error" in (r.error or "")  # never released
        finally:
            await gw.close()


async def test_a_timeout_is_unknown_and_the_next_series_learns_the_outcome_without_paying_twice():
    async with serve_stripe(api_key=KEY, auto_charge_amount=10**9) as s, httpx.AsyncClient(base_url=s.url) as c:
        # the refund is made, its answer comes after the adapter gave up; the retries find the key in use
        await c.post("/_dev/faults", json={"mode": "timeout", "count": 3, "delay_s": 4.0})
        gw = stripe(s.url)
        try:
            first = await gw.refund("rf-d1", "pi_D", 900, "CNY", META)
            assert first.outcome == "unknown" and first.reference is None
            await _until_not_in_flight(s)
            later = await gw.refund("rf-d1", "pi_D", 900, "CNY", META)
            assert later.outcome == "paid"
            assert s.state.replays == 1 and len(s.state.refunds) == 1
        finally:
            await gw.close()


async def test_a_pending_refund_is_read_back_by_its_id_and_settled_by_a_signed_webhook():
    async with serve_stripe(api_key=KEY, auto_charge_amount=10**9) as s, httpx.AsyncClient(base_url=s.url) as c:
        await c.post("/_dev/faults", json={"mode": "pending"})
        gw = stripe(s.url)
        try:
            r = await gw.refund("rf-e1", "ch_E", 400, "CNY", META)
            assert r.outcome == "unknown" and r.reference and r.reference.startswith("re_")
            assert (await gw.refund("rf-e1", "ch_E", 400, "CNY", META, r.reference)).outcome == "unknown"
            settled = await c.post(f"/_dev/refunds/{r.reference}/settle", json={"status": "succeeded"})
            assert settled.status_code == 200
            assert (await gw.refund("rf-e1", "ch_E", 400, "CNY", META, r.reference)).outcome == "paid"
            assert s.state.requests == 1  # the reads were GETs, never a second refund
            lost = await gw.refund("rf-e2", "ch_E", 400, "CNY", META, "re_not_there")  # a 404 on the read
            assert lost.outcome == "unknown" and lost.reference == "re_not_there"  # never released

            refund = s.state.refunds[r.reference]
            event = orjson.dumps({"object": "event", "type": "refund.updated", "data": {"object": refund}})
            (w,) = gw.read_webhook({"stripe-signature": sign_webhook("whsec_t", event)}, event)
            assert (w.reference, w.refund_id, w.ok) == (r.reference, "rf-1", True)
            for header in (
                None,
                sign_webhook("whsec_other", event),
                sign_webhook("whsec_t", event, int(time.time()) - 900),
            ):
                with pytest.raises(WebhookRefused) as refused:
                    gw.read_webhook({"stripe-signature": header} if header else {}, event)
                assert refused.value.status == 401 and refused.value.field == "Stripe-Signature"
        finally:
            await gw.close()


async def _until_not_in_flight(s) -> None:
    """The late answer of the timed-out request was written (the key is no longer in use)."""
    from tests.kafkautil import wait_for

    await wait_for(lambda: _done(s), 5)


async def _done(s) -> bool | None:
    return True if not s.state.in_flight else None
