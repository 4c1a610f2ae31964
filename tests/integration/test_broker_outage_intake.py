"""A Kafka outage does not stop intake: readiness depends on PostgreSQL and the migrations only, a
webhook is accepted (202) while the broker is down, and its event is published once the broker is back
and reaches the services that consume it."""

from __future__ import annotations

import signal
import uuid

import httpx

from services.returns import SPEC as RETURNS
from services.warehouse import SPEC as WAREHOUSE
from tests.kafkautil import wait_for
from tests.webhooks import return_body, signed


async def test_webhooks_are_accepted_while_the_broker_is_down(settings, kafka, service_runner):
    async with service_runner(RETURNS, settings) as svc, httpx.AsyncClient(base_url=svc.base_url) as client:
        # The broker stops answering (a hung broker or a network partition; the memory-only embedded
        # broker would come back from a restart without its topics).
        kafka.proc.send_signal(signal.SIGSTOP)
        try:
            ready = await client.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json()["checks"]["database"] == "ok" and ready.json()["checks"]["broker"] != "ok"
            raw, headers = signed(return_body(order_id="ORD-OUTAGE-1", tracking_no="SF-OUTAGE-1"))
            accepted = await client.post("/v1/webhooks/generic/returns", content=raw, headers=headers)
            assert accepted.status_code == 202, accepted.text
            rid = uuid.UUID(accepted.json()["return_id"])
            assert await svc.runtime.pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL") >= 1

        finally:
            kafka.proc.send_signal(signal.SIGCONT)
        async with service_runner(WAREHOUSE, settings) as warehouse:
            # the event reached a consumer: the warehouse now expects the parcel
            await wait_for(
                lambda: warehouse.runtime.pool.fetchval("SELECT count(*) = 1 FROM parcels WHERE return_id = $1", rid),
                timeout_s=60,
            )
        assert await svc.runtime.pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0
