"""The bare baseline: batched produce → consume → insert, on the same broker and database."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from returnflow.kafka import create_topics

TOPIC = "bench.baseline"


def fresh_group_consumer(bootstrap: str, topic: str, prefix: str, **options: Any) -> AIOKafkaConsumer:
    """A consumer in a new group that reads `topic` from its start and commits by hand."""
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"{prefix}-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=2000,
        heartbeat_interval_ms=400,
        **options,
    )


async def run_baseline(bootstrap: str, dsn: str, n: int = 20000) -> dict[str, float]:
    await create_topics(bootstrap, [(TOPIC, 4)])
    conn = await asyncpg.connect(dsn)
    await conn.execute(
        "DROP TABLE IF EXISTS bench_baseline; CREATE TABLE bench_baseline (id uuid PRIMARY KEY, body bytea)"
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2, max_batch_size=256 * 1024, acks="all")
    consumer = fresh_group_consumer(bootstrap, TOPIC, "baseline", max_poll_records=500)
    await producer.start()
    await consumer.start()
    payloads = [orjson.dumps({"id": str(uuid.uuid4()), "pad": "x" * 250}) for _ in range(n)]
    t0 = time.perf_counter()

    async def produce() -> None:
        futs = [await producer.send(TOPIC, p, key=str(i).encode()) for i, p in enumerate(payloads)]
        await asyncio.gather(*futs)

    async def consume() -> None:
        done = 0
        while done < n:
            batches = await consumer.getmany(timeout_ms=100, max_records=500)
            recs = [r for rs in batches.values() for r in rs]
            if not recs:
                continue
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO bench_baseline SELECT * FROM unnest($1::uuid[], $2::bytea[])",
                    [orjson.loads(r.value)["id"] for r in recs],
                    [r.value for r in recs],
                )
            await consumer.commit()
            done += len(recs)

    await asyncio.gather(produce(), consume())
    elapsed = time.perf_counter() - t0
    await producer.stop()
    await consumer.stop()
    await conn.close()
    return {"messages": n, "elapsed_s": elapsed, "per_s": n / elapsed}
