"""A Kafka outage does not stop intake: readiness depends on PostgreSQL and the migrations only, a
webhook is accepted (202) while the broker is down, and its event is published once the broker is back."""

from __future__ import annotations

import httpx

from services.returns import SPEC
from tests.kafkautil import read_topic, values, wait_for
from tests.webhooks import return_body, signed


async def test_webhooks_are_accepted_while_the_broker_is_down(settings, kafka, service_runner):
    async with service_runner(SPEC, settings) as svc, httpx.AsyncClient(base_url=svc.base_url) as client:
        kafka.stop()
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["database"] == "ok" and ready.json()["checks"]["broker"] != "ok"
        raw, headers = signed(return_body(order_id="ORD-OUTAGE-1"))
        accepted = await client.post("/v1/webhooks/generic/returns", content=raw, headers=headers)
        assert accepted.status_code == 202, accepted.text
        rid = accepted.json()["return_id"]
        assert await svc.runtime.pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL") >= 1
        kafka.start()  # the embedded broker restarts empty, on the same port
        await wait_for(
            lambda: svc.runtime.pool.fetchval("SELECT count(*) = 0 FROM outbox WHERE published_at IS NULL"),
            timeout_s=60,
        )
        events = values(await read_topic(settings.kafka_bootstrap, "returns.requested", expect=1, timeout_s=30))
        assert [e["return_id"] for e in events] == [rid]
