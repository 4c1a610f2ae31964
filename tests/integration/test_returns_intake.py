"""A signed webhook becomes a committed return and an event on the real broker."""

from __future__ import annotations

import asyncio
import uuid

import httpx

from services.returns import SPEC
from tests.idle import wait_idle
from tests.kafkautil import headers, read_topic, values, wait_for
from tests.readers import READ
from tests.webhooks import return_body, signed

URL = "/v1/webhooks/generic/returns"


async def test_webhook_commits_return_and_publishes_event(settings, service_runner):
    async with service_runner(SPEC, settings) as svc, httpx.AsyncClient(base_url=svc.base_url, headers=READ) as client:
        raw, hdrs = signed(return_body())
        hdrs["x-correlation-id"] = "corr-abc-123"
        r = await client.post(URL, content=raw, headers=hdrs)
        assert r.status_code == 202, r.text
        rid = r.json()["return_id"]
        assert r.json()["timeline_url"] == f"/v1/returns/{rid}/timeline"
        row = await svc.runtime.pool.fetchrow("SELECT status, paid_total FROM returns WHERE id = $1", uuid.UUID(rid))
        assert row["status"] == "requested" and row["paid_total"] == 5000
        records = await read_topic(settings.kafka_bootstrap, "returns.requested", expect=1)
        assert len(records) == 1
        event = values(records)[0]
        assert event["return_id"] == rid
        assert event["correlation_id"] == "corr-abc-123"
        assert records[0].key == rid.encode()
        h = headers(records[0])
        assert h["rf-correlation-id"] == "corr-abc-123"
        assert h["rf-type"] == "return.requested" and h["rf-version"] == "1"
        got = await client.get(f"/v1/returns/{rid}")
        assert got.status_code == 200
        assert got.json()["customer"]["phone"] != "+8613812345678"  # masked
        tl = await client.get(f"/v1/returns/{rid}/timeline")
        assert [e["type"] for e in tl.json()["entries"]] == ["return.requested"]


async def test_same_webhook_nine_times_concurrently_is_one_return_one_event(settings, service_runner):
    async with service_runner(SPEC, settings) as svc, httpx.AsyncClient(base_url=svc.base_url, headers=READ) as client:
        body = return_body()
        raw, hdrs = signed(body, delivery_id="delivery-1")
        sequential = [await client.post(URL, content=raw, headers=hdrs) for _ in range(3)]
        concurrent = await asyncio.gather(*(client.post(URL, content=raw, headers=hdrs) for _ in range(3)))
        # a platform re-sending with a new delivery id is still the same (shop, platform_return_id)
        others = await asyncio.gather(
            *(client.post(URL, content=r, headers=h) for r, h in (signed(body) for _ in range(3)))
        )
        responses = sequential + list(concurrent) + list(others)
        assert sorted(r.status_code for r in responses) == [200] * 8 + [202]
        assert len({r.json()["return_id"] for r in responses}) == 1
        assert await svc.runtime.pool.fetchval("SELECT count(*) FROM returns") == 1
        await wait_idle(svc)
        records = await read_topic(settings.kafka_bootstrap, "returns.requested", expect=1)
        assert len(records) == 1


async def test_concurrent_distinct_webhooks_all_accepted(settings, service_runner):
    async with service_runner(SPEC, settings) as svc, httpx.AsyncClient(base_url=svc.base_url, headers=READ) as client:
        reqs = [signed(return_body()) for _ in range(120)]
        responses = await asyncio.gather(*(client.post(URL, content=r, headers=h) for r, h in reqs))
        assert all(r.status_code == 202 for r in responses)
        assert len({r.json()["return_id"] for r in responses}) == 120
        records = await read_topic(settings.kafka_bootstrap, "returns.requested", expect=120)
        assert len({v["event_id"] for v in values(records)}) == 120
        assert await wait_for(
            lambda: svc.runtime.pool.fetchval("SELECT count(*) = 0 FROM outbox WHERE published_at IS NULL")
        )
