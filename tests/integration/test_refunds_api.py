"""refunds over HTTP and at the ledger, on the real broker and PostgreSQL: who may decide, bad input,
idempotent retries, concurrent grants against the paid total, declines, and clawbacks."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from tests.integration.money_path_support import auth, platform
from tests.integration.notify_support import publish, requested
from tests.kafkautil import read_topic, values, wait_for


async def test_decisions_api_actor_amount_and_idempotency(settings, service_runner):
    async with platform(settings, service_runner) as p:
        rid = await p.new_return(kind="exchange", paid_total=5000)
        api = p.refunds[0]
        await wait_for(lambda: _known(p, rid))
        url = f"/v1/refunds/{rid}/decisions"
        grant = {"action": "grant_free_refund", "amount": 500}
        assert (await api.post(url, json=grant)).status_code == 401
        r = await api.post(url, json=grant, headers={"authorization": "Bearer who-knows"})
        assert r.status_code == 401 and "unknown actor" in r.json()["detail"]
        # the role in a request body is ignored: the roster says agent-amy is an agent
        r = await api.post(url, json={**grant, "amount": 4000, "role": "owner"}, headers=auth("agent-amy"))
        assert r.status_code == 422  # unknown field refused, naming it
        for bad in (
            {"action": "grant_free_refund"},
            {**grant, "amount": 0},
            {**grant, "amount": "5.00"},
            {**grant, "amount": 99_999},
        ):
            r = await api.post(url, json=bad, headers=auth("agent-amy"))
            assert r.status_code == 422, (bad, r.text)
            assert r.json()["fields"][0]["field"] == "amount"
        r = await api.post(f"/v1/refunds/{uuid.uuid4()}/decisions", json=grant, headers=auth("agent-amy"))
        assert r.status_code == 202 and r.json()["result"] == "parked"  # waits for its return
        r = await api.post(url, json={"action": "approve"}, headers=auth("sup-sam"))
        assert r.status_code == 409
        headers = {**auth("agent-amy"), "idempotency-key": "click-1"}
        first, *others = await asyncio.gather(*(api.post(url, json=grant, headers=headers) for _ in range(3)))
        again = await api.post(url, json=grant, headers=headers)
        for r in (*others, again):  # concurrent and later retries all get the first answer
            assert r.status_code == first.status_code == 200 and r.json() == first.json()
        await p.wait_issued(rid)
        assert [x["amount"] for x in await p.ledger(rid)] == [500]
        r = await api.post(url, json={**grant, "amount": 2000}, headers=auth("agent-amy"))
        assert r.status_code == 202 and r.json()["required_role"] == "supervisor"  # 25.00 in all
        r = await api.post(url, json={"action": "reject"}, headers=auth("agent-amy"))
        assert r.status_code == 403
        r = await api.post(url, json={"action": "reject", "note": "not justified"}, headers=auth("mgr-mia"))
        assert r.status_code == 200 and r.json()["result"] == "rejected"
        ledger = (await api.get(f"/v1/refunds/{rid}", headers=auth("owner-oz"))).json()
        assert [e["status"] for e in ledger["escalations"]] == ["rejected"]
        await p.timeline(rid, ["refund.escalated", "refund.decided", "refund.issued"])


async def test_decisions_before_the_return_and_concurrent_retries_get_one_answer_and_take_effect(
    settings, service_runner
):
    """Issue 12, finding 7: an early decision with an Idempotency-Key was answered 404 and that 404 was
    replayed for the key forever; concurrent requests with one key got different bodies."""
    async with platform(settings, service_runner) as p:
        api = p.refunds[0]
        rid = uuid.uuid4()
        url = f"/v1/refunds/{rid}/decisions"
        grant = {"action": "grant_free_refund", "amount": 500}
        headers = {**auth("agent-amy"), "idempotency-key": "early-1"}
        early = await asyncio.gather(*(api.post(url, json=grant, headers=headers) for _ in range(4)))
        assert [r.status_code for r in early] == [202] * 4 and early[0].json()["result"] == "parked"
        assert len({r.content for r in early}) == 1
        await publish(p.settings.kafka_bootstrap, [requested(rid=rid, kind="exchange")])
        await p.wait_issued(rid)
        r = await api.post(url, json=grant, headers=headers)  # the retry now gets what the decision did
        assert r.status_code == 200 and (r.json()["result"], r.json()["amount"]) == ("refunded", 500)

        r = await api.post(url, json={**grant, "amount": 3000}, headers=auth("agent-amy"))
        assert r.status_code == 202 and r.json()["result"] == "escalated"
        headers = {**auth("sup-sam"), "idempotency-key": "approve-1"}
        answers = await asyncio.gather(*(api.post(url, json={"action": "approve"}, headers=headers) for _ in range(4)))
        assert [r.status_code for r in answers] == [200] * 4
        assert len({r.content for r in answers}) == 1 and answers[0].json()["amount"] == 3000
        r = await api.post(url, json={"action": "approve", "amount": 100}, headers=headers)
        assert r.status_code == 422 and "Idempotency-Key" in r.text and "amount" in r.text
        await p.wait_issued(rid, 2)
        assert sorted(x["amount"] for x in await p.ledger(rid)) == [500, 3000]


async def test_concurrent_grants_on_two_instances_never_exceed_the_paid_total(settings, service_runner):
    async with platform(settings, service_runner, refunds_instances=2) as p:
        rid = await p.new_return(kind="exchange", paid_total=5000)
        await wait_for(lambda: _known(p, rid))
        grant = {"action": "grant_free_refund", "amount": 2000}
        results = await asyncio.gather(
            *(
                p.refunds[i % 2].post(f"/v1/refunds/{rid}/decisions", json=grant, headers=auth("owner-oz"))
                for i in range(10)
            )
        )
        assert sorted(r.status_code for r in results) == [200, 200] + [422] * 8
        await p.wait_issued(rid, 2)
        assert await p.refunds_pool.fetchval("SELECT reserved FROM returns WHERE return_id = $1", rid) == 4000
        # the database itself refuses an overshoot, whatever the application does
        with pytest.raises(asyncpg.CheckViolationError):
            await p.refunds_pool.execute(
                """INSERT INTO refunds (refund_id, return_id, cause, amount, currency, basis, idempotency_key,
                       correlation_id) VALUES ('x', $1, 'manual', 1001, 'CNY', 'agent_authority', 'x', 'x')""",
                rid,
            )
        with pytest.raises(asyncpg.RaiseError):
            await p.refunds_pool.execute("DELETE FROM refunds WHERE return_id = $1", rid)


async def test_declined_refund_is_released_and_reported_not_retried(settings, service_runner):
    async with platform(settings, service_runner) as p:
        await p.gateway.post("/_sim/faults", json={"mode": "decline", "count": 1})
        rid = await p.new_return(tracking_no="SF-DECLINE")
        await p.scan("SF-DECLINE")

        async def failed():
            rows = [r for r in await p.ledger(rid) if r["status"] == "failed"]
            return rows or None

        await wait_for(failed)
        assert await p.refunds_pool.fetchval("SELECT reserved FROM returns WHERE return_id = $1", rid) == 0
        events = values(await read_topic(p.settings.kafka_bootstrap, "refunds.failed", expect=1))
        assert events[0]["retryable"] is False and "402" in events[0]["error"]
        await p.idle()
        assert len(await p.ledger(rid)) == 1  # a person decides what next; the policy does not pay it again


async def test_clawback_after_early_refund_updates_history_and_stops_the_next_early_refund(settings, service_runner):
    async with platform(settings, service_runner) as p:
        rid = await p.new_return(tracking_no="SF-CB-1")
        await p.scan("SF-CB-1")
        await p.wait_issued(rid)
        r = await p.receipt(
            tracking_no="SF-CB-1",
            lines=[
                {"sku": "SKU-1", "qty_received": 1, "condition": "wrong_item", "disposition": "quarantine"},
                {"sku": "SKU-1", "qty_received": 1, "condition": "as_described", "disposition": "restock"},
            ],
        )
        assert r.status_code == 201, r.text
        flagged = values(await read_topic(p.settings.kafka_bootstrap, "refunds.clawbacks", expect=1))
        assert flagged[0]["amount"] == 2000 and "wrong_item" in flagged[0]["reason"]
        listing = (await p.refunds[0].get("/v1/refunds/clawbacks", headers=auth("sup-sam"))).json()["clawbacks"]
        assert [(c["return_id"], c["amount"], c["customer_key"]) for c in listing] == [(str(rid), 2000, "shop-1:c-1")]
        assert len(await p.ledger(rid)) == 1  # never an automatic charge back
        # the same customer's next parcel moves: no early refund now (0 clawbacks allowed in 90 days)
        nxt = await p.new_return(tracking_no="SF-CB-2")
        await p.scan("SF-CB-2")

        async def decided():
            return await p.refunds_pool.fetchval(
                "SELECT detail FROM decisions WHERE return_id = $1 AND cause = 'early_scan'", nxt
            )

        assert "clawback" in await wait_for(decided)
        assert await p.ledger(nxt) == []


async def _known(p, rid):
    return await p.refunds_pool.fetchval("SELECT 1 FROM returns WHERE return_id = $1", rid)
