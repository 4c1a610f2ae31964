"""The refunds service with `gateway: stripe` against the local Stripe over real sockets, on the real broker
and PostgreSQL: paid to the order's PaymentIntent; a decline fails the refund (amount released,
refund.failed); 429 and 5xx retried; a timeout left unknown and learnt without paying twice; a webhook
with a bad Stripe-Signature refused with nothing changed; a pending refund settled by Stripe's webhook."""

from __future__ import annotations

import uuid

import orjson

from services.refunds.dev.stripe_server import event_for
from services.refunds.providers.stripe import sign_webhook
from tests.integration.money_path_support import STRIPE_WEBHOOK_SECRET, Platform, platform
from tests.kafkautil import read_topic, values, wait_for


async def early_refund(p: Platform, payment: str) -> uuid.UUID:
    """A return paid with `payment` whose parcel is picked up: an early refund of 40.00 is decided."""
    tracking = f"SF-{uuid.uuid4().hex[:8]}"
    rid = await p.new_return(tracking_no=tracking, payment_reference=payment)
    assert (await p.scan(tracking, "picked_up")).status_code == 202
    return rid


async def stripe_refunds(p: Platform, payment: str) -> list[dict]:
    r = await p.gateway.get("/v1/refunds", params={"payment_intent": payment})
    assert r.status_code == 200, r.text
    return r.json()["data"]


async def test_paid_to_the_orders_payment_intent_after_a_429_and_a_500_retried_under_the_same_key(
    settings, service_runner
):
    async with platform(settings, service_runner, gateway="stripe") as p:
        await p.gateway.post("/_dev/faults", json={"mode": "rate_limit", "retry_after": 1})
        await p.gateway.post("/_dev/faults", json={"mode": "error", "status": 500})
        rid = await early_refund(p, "pi_paid_1")
        (refund,) = await p.wait_issued(rid)
        (at_stripe,) = await stripe_refunds(p, "pi_paid_1")
        assert (at_stripe["amount"], at_stripe["currency"], at_stripe["status"]) == (4000, "cny", "succeeded")
        assert at_stripe["metadata"] == {"basis": "early_scan", "refund_id": refund["refund_id"], "return_id": str(rid)}
        reference = await p.refunds_pool.fetchval(
            "SELECT gateway_reference FROM refunds WHERE refund_id = $1", refund["refund_id"]
        )
        assert reference == at_stripe["id"]
        assert (await p.gateway.get("/_dev/stats")).json()["requests"] == 3  # 429, 500, then paid


async def test_an_amount_above_the_charge_is_declined_for_good_and_released(settings, service_runner):
    async with platform(settings, service_runner, gateway="stripe") as p:
        assert (await p.gateway.post("/_dev/charges", json={"id": "pi_small", "amount": 1000})).status_code == 204
        rid = await early_refund(p, "pi_small")
        (failed,) = values(await read_topic(p.settings.kafka_bootstrap, "refunds.failed", expect=1))
        assert failed["retryable"] is False and "amount_too_large" in failed["error"]
        await p.idle()
        assert [r["status"] for r in await p.ledger(rid)] == ["failed"]
        assert await p.refunds_pool.fetchval("SELECT reserved FROM returns WHERE return_id = $1", rid) == 0
        assert await stripe_refunds(p, "pi_small") == []


async def test_a_timeout_stays_unknown_then_the_replayed_key_answers_and_nothing_is_paid_twice(
    settings, service_runner
):
    async with platform(settings, service_runner, gateway="stripe") as p:
        # made at Stripe, answered after the adapter gave up (0.3 s); its retries find the key in use (409)
        await p.gateway.post("/_dev/faults", json={"mode": "timeout", "count": 3, "delay_s": 1.0})
        rid = await early_refund(p, "pi_slow")
        unknown = values(await read_topic(p.settings.kafka_bootstrap, "refunds.failed", expect=1))
        assert unknown[0]["retryable"] is True  # unknown: kept pending, never released
        (refund,) = await p.wait_issued(rid)
        (at_stripe,) = await stripe_refunds(p, "pi_slow")
        assert at_stripe["id"] == await p.refunds_pool.fetchval(
            "SELECT gateway_reference FROM refunds WHERE refund_id = $1", refund["refund_id"]
        )
        assert p.stripe is not None and p.stripe.state.replays >= 1


async def test_a_pending_refund_is_settled_by_the_signed_webhook_and_a_bad_signature_changes_nothing(
    settings, service_runner
):
    # the worker would ask Stripe again only after a minute: only the webhook can settle it here
    async with platform(
        settings, service_runner, gateway="stripe", payment_retry_base_s=60, payment_retry_max_s=60
    ) as p:
        assert p.stripe is not None
        await p.gateway.post("/_dev/faults", json={"mode": "pending"})
        rid = await early_refund(p, "pi_pending")
        (at_stripe,) = await wait_for(lambda: _nonempty(stripe_refunds(p, "pi_pending")))
        assert at_stripe["status"] == "pending"
        row = await wait_for(lambda: _referenced(p, rid))
        assert row["status"] == "pending" and row["gateway_reference"] == at_stripe["id"]

        forged = orjson.dumps(event_for({**at_stripe, "status": "succeeded"}, "refund.updated"))
        refunds = p.refunds[0]
        for header in (sign_webhook("whsec_not_the_secret", forged), None):
            hdrs = {"content-type": "application/json", **({"stripe-signature": header} if header else {})}
            r = await refunds.post("/v1/webhooks/stripe/refunds", content=forged, headers=hdrs)
            assert r.status_code == 401, r.text
            assert r.json()["fields"][0]["field"] == "Stripe-Signature"
        assert [x["status"] for x in await p.ledger(rid)] == ["pending"]

        settled = await p.gateway.post(f"/_dev/refunds/{at_stripe['id']}/settle", json={"status": "succeeded"})
        assert settled.json()["webhooks"] == [200, 200]  # refund.updated, then charge.refund.updated
        answers = [orjson.loads(d["answer"]) for d in p.stripe.state.webhooks]
        assert [a["settled"] for a in answers] == [1, 0]  # the second event changes nothing
        (issued,) = await p.wait_issued(rid)
        await p.idle()
        events = values(await read_topic(p.settings.kafka_bootstrap, "refunds.issued", expect=1))
        assert [(e["refund_id"], e["gateway_reference"]) for e in events] == [(issued["refund_id"], at_stripe["id"])]

        ignored = orjson.dumps({"object": "event", "type": "customer.created", "data": {"object": {}}})
        r = await refunds.post(
            "/v1/webhooks/stripe/refunds",
            content=ignored,
            headers={"stripe-signature": sign_webhook(STRIPE_WEBHOOK_SECRET, ignored)},
        )
        assert r.status_code == 200 and r.json()["settled"] == 0


async def _nonempty(coro) -> list | None:
    found = await coro
    return found or None


async def _referenced(p: Platform, rid: uuid.UUID) -> dict | None:
    row = await p.refunds_pool.fetchrow(
        "SELECT status, gateway_reference FROM refunds WHERE return_id = $1 AND gateway_reference IS NOT NULL", rid
    )
    return dict(row) if row else None
