"""The idempotent consumer on the real broker: duplicates dropped, a failing message dead-lettered
with its origin in headers, other partitions still processed."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

from aiokafka import AIOKafkaProducer

from contracts.events import TrackingRegistered
from returnflow.consumer import Batch
from returnflow.db import Conn
from returnflow.outbox import event_record
from returnflow.service import ConsumerSpec, ServiceSpec
from tests.kafkautil import committed_offsets, headers, read_topic, wait_for

TOPIC = "returns.tracking-registered"
POISON_TRACKING = "POISON"


async def failing_handler(ctx: None, conn: Conn, batch: Batch) -> None:
    registered = batch.of(TrackingRegistered)
    assert len(registered) == len(batch)
    if any(e.tracking_no == POISON_TRACKING for e in registered):
        raise RuntimeError("cannot apply this one")
    await conn.executemany(
        "INSERT INTO seen (event_id, tracking_no) VALUES ($1, $2)",
        [(str(e.event_id), e.tracking_no) for e in registered],
    )


def make_spec(tmp_path: Path) -> ServiceSpec[None]:
    folder = tmp_path / "svc"
    (folder / "migrations").mkdir(parents=True)
    (folder / "migrations" / "001_seen.sql").write_text(
        "CREATE TABLE seen (event_id text PRIMARY KEY, tracking_no text NOT NULL);"
    )
    return ServiceSpec(name="probe", folder=folder, consumers=[ConsumerSpec("c", [TOPIC], apply=failing_handler)])


def event(tracking: str, rid: uuid.UUID | None = None) -> TrackingRegistered:
    return TrackingRegistered(
        occurred_at=datetime.now(UTC), return_id=rid or uuid.uuid4(), correlation_id="corr-dlq", tracking_no=tracking
    )


async def produce(bootstrap: str, items: list[tuple[bytes, bytes, dict[str, str]]], partition: int | None = None):
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for key, value, hdrs in items:
            await producer.send_and_wait(
                TOPIC, value, key=key, partition=partition, headers=[(k, v.encode()) for k, v in hdrs.items()]
            )
    finally:
        await producer.stop()


async def test_poison_goes_to_dlq_and_others_keep_moving(settings, service_runner, tmp_path):
    spec = make_spec(tmp_path)
    poison = event(POISON_TRACKING)
    good = [event(f"T{i}") for i in range(20)]
    garbage = (b"k", b"{not json", {})
    recs = [event_record(e) for e in [poison, *good]]
    async with service_runner(spec, settings) as svc:
        # poison first on partition 0, then good messages spread over every partition
        await produce(settings.kafka_bootstrap, [(recs[0].key, recs[0].value, recs[0].headers)], partition=0)
        await produce(settings.kafka_bootstrap, [garbage], partition=1)
        await produce(settings.kafka_bootstrap, [(r.key, r.value, r.headers) for r in recs[1:]])
        pool = svc.runtime.pool
        assert await wait_for(lambda: pool.fetchval("SELECT count(*) = 20 FROM seen"), timeout_s=20)
        dlq = await read_topic(settings.kafka_bootstrap, TOPIC + ".dlq", expect=2)
        assert len(dlq) == 2
        by_type = {headers(r)["rf-dlq-error-type"]: r for r in dlq}
        assert set(by_type) == {"RuntimeError", "PoisonMessage"}
        h = headers(by_type["RuntimeError"])
        assert h["rf-dlq-original-topic"] == TOPIC
        assert h["rf-dlq-original-partition"] == "0"
        assert h["rf-dlq-original-offset"] == "0"
        assert "cannot apply this one" in h["rf-dlq-error-message"]
        assert h["rf-dlq-attempts"] == str(settings.consumer_max_attempts)
        assert h["rf-correlation-id"] == "corr-dlq"
        assert by_type["RuntimeError"].value == recs[0].value
        assert headers(by_type["PoisonMessage"])["rf-dlq-original-partition"] == "1"
        assert await pool.fetchval("SELECT count(*) FROM dead_letters") == 2


async def test_duplicates_are_applied_once(settings, service_runner, tmp_path):
    spec = make_spec(tmp_path)
    events = [event(f"D{i}") for i in range(10)]
    recs = [event_record(e) for e in events]
    async with service_runner(spec, settings) as svc:
        for _ in range(3):
            await produce(settings.kafka_bootstrap, [(r.key, r.value, r.headers) for r in recs])
        pool = svc.runtime.pool
        # every copy consumed and committed; still 10 rows applied, nothing dead-lettered
        await wait_for(lambda: _committed(settings.kafka_bootstrap, 30))
        assert await pool.fetchval("SELECT count(*) FROM processed_events WHERE consumer = 'probe.c'") == 10
        assert await pool.fetchval("SELECT count(*) FROM seen") == 10
        assert await pool.fetchval("SELECT count(*) FROM dead_letters") == 0


async def _committed(bootstrap: str, total: int) -> bool:
    return sum((await committed_offsets(bootstrap, "probe.c", TOPIC)).values()) >= total
