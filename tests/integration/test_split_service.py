"""A service split in two processes (`consumers_apart`): the web half answers its routes and runs no consumer
group, the consumers half builds what its groups build and answers only the ops endpoints; together they do
what one process did — also when the broker restarts empty under them."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import httpx
from aiokafka import AIOKafkaProducer
from pydantic import SecretStr

from apphost.embedded import EmbeddedKafka, free_port
from returnflow.kafka import create_topics
from services.returns import SPEC
from tests.idle import wait_idle
from tests.integration.test_broker_restart_consumers import scan
from tests.integration.test_consumer_group_lag import scrape
from tests.integration.test_returns_timeline import publish
from tests.kafkautil import wait_for
from tests.webhooks import return_body, signed


async def accept(client: httpx.AsyncClient, n: int) -> list[uuid.UUID]:
    ids = []
    for _ in range(n):
        raw, h = signed(return_body())
        r = await client.post("/v1/webhooks/generic/returns", content=raw, headers=h)
        assert r.status_code == 202, r.text
        ids.append(uuid.UUID(r.json()["return_id"]))
    return ids


async def test_the_web_half_accepts_and_the_consumers_half_builds_the_timeline(settings, service_runner):
    web, apart = settings.model_copy(update={"role": "web"}), settings.model_copy(update={"role": "consumers"})
    async with (
        service_runner(SPEC, web) as w,
        service_runner(SPEC, apart) as c,
        httpx.AsyncClient(base_url=w.base_url) as wc,
        httpx.AsyncClient(base_url=c.base_url) as cc,
    ):
        assert w.runtime.consumers == {} and list(c.runtime.consumers) == ["returns.timeline"]
        raw, h = signed(return_body())
        refused = await cc.post("/v1/webhooks/generic/returns", content=raw, headers=h)
        assert refused.status_code == 404, "the consumers half serves no webhook"
        assert (await cc.get("/readyz")).status_code == 200
        ids = await accept(wc, 5)
        await publish(settings.kafka_bootstrap, [scan(rid, 0) for rid in ids])
        pool = w.runtime.pool
        await wait_for(lambda: pool.fetchval("SELECT count(*) = 5 FROM timeline WHERE type = 'parcel.scanned'"))
        await wait_idle(w, c)
        statuses = await pool.fetch("SELECT status FROM returns WHERE id = ANY($1::uuid[])", ids)
        assert {r["status"] for r in statuses} == {"in_transit"}, "the consumers half moved each return on"


async def test_a_split_service_rereads_a_restarted_broker(settings, service_runner, tmp_path):
    kafka = EmbeddedKafka(free_port(), log_path=tmp_path / "own-broker.log").start()
    try:
        await create_topics(kafka.bootstrap)
        own = {"kafka_bootstrap": kafka.bootstrap, "database_url": SecretStr(settings.database_url.get_secret_value())}
        web = settings.model_copy(update={**own, "role": "web"})
        apart = settings.model_copy(update={**own, "role": "consumers"})
        async with (
            service_runner(SPEC, web) as w,
            service_runner(SPEC, apart),
            httpx.AsyncClient(base_url=w.base_url) as client,
        ):
            ids = await accept(client, 20)
            await publish(kafka.bootstrap, [scan(rid, k) for rid in ids for k in range(3)])  # positions ~15
            pool = w.runtime.pool
            await wait_for(lambda: pool.fetchval("SELECT count(*) = 60 FROM timeline WHERE type = 'parcel.scanned'"))
            await wait_for(lambda: pool.fetchval("SELECT count(*) = 0 FROM outbox WHERE published_at IS NULL"))

            kafka.stop()
            kafka.start()  # same port, empty log: only the web half published, its relay finds the loss
            await create_topics(kafka.bootstrap)
            await publish(kafka.bootstrap, [scan(rid, 9) for rid in ids[:5]])  # offsets 0..1 of the new log
            await wait_for(
                lambda: pool.fetchval("SELECT count(*) = 65 FROM timeline WHERE type = 'parcel.scanned'"), timeout_s=30
            )
            assert await pool.fetchval("SELECT epoch FROM broker_epoch") >= 1
    finally:
        kafka.stop()


async def test_the_web_half_reports_the_lag_of_the_groups_it_leaves_to_the_other(settings, service_runner, kafka):
    """`returnflow backlogs` and the lag alerts read the service's port: the web half measures its service's
    consumer groups from the broker's side though it runs none of them."""
    web = settings.model_copy(update={"role": "web", "consumer_group_lag_interval_s": 0.2})
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap)
    await producer.start()
    try:
        async with service_runner(SPEC, web) as w, httpx.AsyncClient(base_url=w.base_url) as client:
            for i in range(7):  # one record batch each: the embedded broker's end offsets are then exact
                await producer.send_and_wait("parcels.scanned", b"{}", key=f"r-{i}".encode())

            async def lag() -> float | None:
                metrics = await scrape(client)
                values = [
                    v
                    for k, v in metrics["returnflow_consumer_group_lag"].items()
                    if dict(k)["group"] == "returns.timeline" and dict(k)["topic"] == "parcels.scanned"
                ]
                return sum(values) if values else None

            await wait_for(lambda: _equals(lag, 7), timeout_s=15)
    finally:
        await producer.stop()


async def _equals(read: Callable[[], Awaitable[float | None]], expected: float) -> bool:
    return await read() == expected
