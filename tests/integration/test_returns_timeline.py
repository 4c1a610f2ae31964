"""Events from other services land on the return's timeline; out-of-order events never move it back."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
from aiokafka import AIOKafkaProducer

from contracts.events import ParcelScanned, RefundIssued, ScanCode
from returnflow.outbox import event_record
from services.returns import SPEC
from tests.kafkautil import wait_for
from tests.readers import READ
from tests.webhooks import return_body, signed


async def publish(bootstrap: str, events) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for e in events:
            r = event_record(e)
            await producer.send_and_wait(
                r.topic, r.value, key=r.key, headers=[(k, v.encode()) for k, v in r.headers.items()]
            )
    finally:
        await producer.stop()


async def test_timeline_collects_lifecycle_events_in_order(settings, service_runner):
    async with service_runner(SPEC, settings) as svc, httpx.AsyncClient(base_url=svc.base_url, headers=READ) as client:
        raw, h = signed(return_body())
        rid = uuid.UUID((await client.post("/v1/webhooks/generic/returns", content=raw, headers=h)).json()["return_id"])
        t0 = datetime.now(UTC)
        refund = RefundIssued(
            occurred_at=t0 + timedelta(seconds=2),
            return_id=rid,
            correlation_id="c",
            refund_id="r1",
            amount=4000,
            currency="CNY",
            basis="early_scan",
            gateway_reference="g1",
        )
        scan = ParcelScanned(
            occurred_at=t0 + timedelta(seconds=1),
            return_id=rid,
            correlation_id="c",
            scan_id="s1",
            tracking_no="SF1",
            carrier="sf",
            scan_code=ScanCode.picked_up,
            scanned_at=t0,
            location="Hangzhou",
            first_moving=True,
        )
        await publish(settings.kafka_bootstrap, [refund, scan, scan])  # late scan, delivered twice

        async def timeline():
            body = (await client.get(f"/v1/returns/{rid}/timeline")).json()
            return body if len(body["entries"]) >= 3 else None

        body = await wait_for(timeline)
        assert [e["type"] for e in body["entries"]] == ["return.requested", "parcel.scanned", "refund.issued"]
        assert body["entries"][2]["summary"] == "Refund of CNY 40.00 paid (early_scan)"
        assert "Hangzhou" in body["entries"][1]["summary"]
        assert body["status"] == "refunded"  # the late scan did not move it back to in_transit
