"""The money path end to end on the real broker and PostgreSQL: request -> scan / receipt -> refund
decided -> paid through the simulated gateway (real sockets) -> on the return's timeline."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from aiokafka import AIOKafkaProducer

from contracts.events import RefundCommand
from returnflow.commands import signed_message
from returnflow.outbox import event_record
from services.refunds.dev import dev_signing_key
from tests.integration.money_path_support import auth, platform
from tests.kafkautil import read_topic, values, wait_for


async def test_early_refund_on_a_moving_scan_before_any_receipt(settings, service_runner):
    from prometheus_client import REGISTRY

    def cycle_count() -> float:
        return REGISTRY.get_sample_value("returnflow_refund_cycle_seconds_count", {"basis": "early_scan"}) or 0.0

    before = cycle_count()
    async with platform(settings, service_runner) as p:
        rid = await p.new_return(tracking_no="SF-EARLY-1")  # 2 x 20.00, paid 50.00; cap 500.00
        r = await p.scan("SF-EARLY-1", "picked_up")
        assert r.status_code == 202, r.text
        (refund,) = await p.wait_issued(rid)
        assert refund["basis"] == "early_scan" and refund["amount"] == 4000
        assert await p.warehouse_pool.fetchval("SELECT count(*) FROM receipts") == 0
        (paid,) = await p.gateway_refunds(rid)
        assert paid["amount"] == 4000 and paid["payment_id"] == "order-1"
        entries = await p.timeline(rid, ["parcel.scanned", "refund.decided", "refund.issued"])
        assert [e["type"] for e in entries][:2] == ["return.requested", "parcel.scanned"]
        assert any("Refund of CNY 40.00 paid (early_scan)" == e["summary"] for e in entries)
        assert cycle_count() == before + 1  # the refund cycle time histogram saw it


async def test_receipt_refund_pays_only_for_the_quantity_received(settings, service_runner):
    async with platform(settings, service_runner, early_refund_cap={"CNY": 1000}) as p:
        rid = await p.new_return(tracking_no="SF-RCPT-1")  # 2 units of SKU-1 at 20.00
        assert (await p.scan("SF-RCPT-1", "in_transit")).status_code == 202  # above the cap: no early refund
        await wait_for(lambda: _decided(p, rid, "early_scan"))
        r = await p.receipt(
            return_id=rid,
            receipt_id="dock-1-0001",
            lines=[{"sku": "SKU-1", "qty_received": 1, "condition": "as_described", "disposition": "destroy"}],
        )
        assert r.status_code == 201, r.text
        (refund,) = await p.wait_issued(rid)
        assert refund["basis"] == "warehouse_receipt" and refund["amount"] == 2000
        assert [x["amount"] for x in await p.gateway_refunds(rid)] == [2000]
        attested = values(await read_topic(p.settings.kafka_bootstrap, "inventory.attestations", expect=1))
        assert [(a["sku"], a["movement"], a["quantity"], a["source"]) for a in attested] == [
            ("SKU-1", "destroy", 1, "warehouse")
        ]
        await p.timeline(rid, ["return.received", "refund.issued"])


async def test_refund_only_within_authority_at_once_above_it_escalated_then_a_supervisor_approves_on_kafka(
    settings, service_runner
):
    async with platform(settings, service_runner) as p:
        small = await p.new_return(
            kind="refund_only", lines=[{"sku": "LIP-1", "qty": 1, "unit_price": 1500, "reason": "damaged"}]
        )
        big = await p.new_return(
            kind="refund_only",
            paid_total=4500,
            lines=[{"sku": "SET-1", "qty": 1, "unit_price": 4500, "reason": "damaged"}],
        )
        refunds = p.refunds[0]
        await wait_for(lambda: _known(p, small, big))
        r = await refunds.post(
            f"/v1/refunds/{small}/decisions",
            json={"action": "grant_free_refund", "amount": 1500},
            headers=auth("agent-amy"),
        )
        assert r.status_code == 200, r.text
        assert r.json()["result"] == "refunded" and r.json()["role"] == "agent"
        (paid,) = await p.wait_issued(small)
        assert paid["basis"] == "refund_only" and paid["actor_id"] == "agent-amy"

        r = await refunds.post(
            f"/v1/refunds/{big}/decisions",
            json={"action": "grant_free_refund", "amount": 4500},
            headers=auth("agent-amy"),
        )
        assert r.status_code == 202, r.text
        assert r.json()["required_role"] == "supervisor"
        assert [x["status"] for x in await p.ledger(big)] == []
        # the supervisor acts with Kafka tooling: a command on refunds.commands
        cmd = RefundCommand(
            occurred_at=datetime.now(UTC), return_id=big, correlation_id="ops-1", action="approve", actor_id="sup-sam"
        )
        cmd = signed_message(cmd, dev_signing_key("sup-sam"))  # signed with the key the roster holds for sup-sam
        await _produce(p.settings.kafka_bootstrap, [cmd])
        (paid,) = await p.wait_issued(big)
        assert paid["amount"] == 4500 and paid["actor_id"] == "sup-sam" and paid["basis"] == "refund_only"
        # the customer's request (oldest) was approved; the agent's own grant was superseded by it
        esc = await p.refunds_pool.fetch(
            "SELECT cause, status, closed_by FROM escalations WHERE return_id = $1 ORDER BY created_at", big
        )
        assert (esc[0]["cause"], esc[0]["status"], esc[0]["closed_by"]) == ("request", "approved", "sup-sam")
        assert esc[1]["status"] == "superseded"
        log = await p.refunds_pool.fetch(
            "SELECT actor_id, actor_role, source, http_status FROM commands WHERE return_id = $1 ORDER BY created_at",
            big,
        )
        assert [tuple(x) for x in log] == [("agent-amy", "agent", "http", 202), ("sup-sam", "supervisor", "kafka", 200)]
        await p.timeline(big, ["refund.escalated", "refund.decided", "refund.issued"])


async def test_one_scan_nine_times_and_two_refunds_services_racing_pay_once(settings, service_runner):
    async with platform(settings, service_runner, refunds_instances=2) as p:
        rid = await p.new_return(tracking_no="SF-RACE-1")
        responses = await asyncio.gather(*(p.scan("SF-RACE-1", "picked_up") for _ in range(9)))
        assert sorted(r.status_code for r in responses) == [200] * 8 + [202]
        assert len({r.json()["scan_id"] for r in responses}) == 1
        await p.idle()
        scanned = values(await read_topic(p.settings.kafka_bootstrap, "parcels.scanned", expect=1))
        assert len(scanned) == 1 and scanned[0]["first_moving"] is True
        # the same scan event delivered again (a replayed DLQ, a re-sent batch): both instances see every copy
        dup = [event_record(_with_new_id(scanned[0])) for _ in range(3)]
        await _produce_records(p.settings.kafka_bootstrap, dup)
        (refund,) = await p.wait_issued(rid)
        await p.idle()  # every copy applied by both instances, nothing left to pay
        groups = await p.refunds_pool.fetchval(
            "SELECT count(DISTINCT consumer) FROM processed_events WHERE event_id = $1", scanned[0]["event_id"]
        )
        assert groups == 2  # both instances applied the scan to the same ledger
        assert len(await p.ledger(rid)) == 1
        assert len(await p.gateway_refunds(rid)) == 1
        issued = values(await read_topic(p.settings.kafka_bootstrap, "refunds.issued", expect=1))
        assert [e["refund_id"] for e in issued] == [refund["refund_id"]]


async def test_gateway_times_out_twice_then_succeeds_one_refund_at_the_gateway_one_in_the_ledger(
    settings, service_runner
):
    async with platform(settings, service_runner) as p:
        r = await p.gateway.post("/_sim/faults", json={"mode": "timeout", "count": 2, "delay_s": 1.0})
        assert r.status_code == 204
        rid = await p.new_return(tracking_no="SF-TIMEOUT-1")
        await p.scan("SF-TIMEOUT-1", "picked_up")
        (refund,) = await p.wait_issued(rid)
        stats = (await p.gateway.get("/_sim/stats")).json()
        assert stats["requests"] == 3  # two answers lost, the third replayed the first result
        (paid,) = await p.gateway_refunds(rid)
        assert paid["amount"] == refund["amount"] == 4000
        row = await p.refunds_pool.fetchrow(
            "SELECT gateway_reference, attempts FROM refunds WHERE refund_id = $1", refund["refund_id"]
        )
        assert row["gateway_reference"] == paid["id"]
        assert await p.refunds_pool.fetchval("SELECT reserved FROM returns WHERE return_id = $1", rid) == 4000


async def test_a_scan_before_the_return_is_known_still_refunds_once_the_return_arrives(settings, service_runner):
    async with platform(settings, service_runner) as p:
        r = await p.scan("SF-EARLY-BIRD", "picked_up", at=datetime.now(UTC) - timedelta(hours=1))
        assert r.status_code == 202 and r.json()["status"] == "parked"
        parked = (await p.warehouse.get("/v1/warehouse/scans/parked")).json()["scans"]
        assert [s["tracking_no"] for s in parked] == ["SF-EARLY-BIRD"]
        rid = await p.new_return(tracking_no="SF-EARLY-BIRD")
        (refund,) = await p.wait_issued(rid)
        assert refund["basis"] == "early_scan"
        assert (await p.warehouse.get("/v1/warehouse/scans/parked")).json()["scans"] == []
        parcel = (await p.warehouse.get(f"/v1/warehouse/parcels/{rid}")).json()
        assert [s["first_moving"] for s in parcel["scans"]] == [True]


# -- helpers ------------------------------------------------------------------------------------------------------


async def _decided(p, rid, cause):
    return await p.refunds_pool.fetchval("SELECT 1 FROM decisions WHERE return_id = $1 AND cause = $2", rid, cause)


async def _known(p, *rids):
    n = await p.refunds_pool.fetchval("SELECT count(*) FROM returns WHERE return_id = ANY($1::uuid[])", list(rids))
    return n == len(rids)


def _with_new_id(data):
    from contracts.events import ParcelScanned

    return ParcelScanned.model_validate({**data, "event_id": str(uuid.uuid4())})


async def _produce(bootstrap, events):
    await _produce_records(bootstrap, [event_record(e) for e in events])


async def _produce_records(bootstrap, records):
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for r in records:
            await producer.send_and_wait(
                r.topic, r.value, key=r.key, headers=[(k, v.encode()) for k, v in r.headers.items()]
            )
    finally:
        await producer.stop()
