"""What consuming one event costs in Python, layer by layer, on the embedded broker (same process,
same records, so the figures compare as ratios on a noisy machine).

  .venv/bin/python -m bench.hop [--messages 20000]

The records are `return.requested` events as the relay publishes them (JSON value, rf-* headers).
Each row reads all of them from the start with a new consumer group and reports the CPU this process
used per record while consuming (group join excluded):

- aiokafka: `getmany` + `commit`, nothing else (the floor);
- aiokafka + validate: and each record decoded and validated as the consumers do (`decode_record`);
- faststream default + validate: a FastStream batch subscriber with its default decoder (it
  JSON-decodes every record for the handler's argument), the handler validating each record;
- faststream runtime + validate: the subscriber as `returnflow.service` configures it (its decoder
  leaves the records alone; the handler validates each once).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.middlewares import AckPolicy

from apphost.embedded import EmbeddedKafka, free_port
from bench.baseline import fresh_group_consumer
from contracts.events import Customer, RequestedBy, ReturnLine, ReturnRequested
from returnflow.consumer import decode_record
from returnflow.kafka import create_topics
from returnflow.outbox import event_record
from returnflow.service import keep_records_raw

TOPIC = "bench.hop"


def sample_event(i: int) -> ReturnRequested:
    now = datetime.now(UTC)
    return ReturnRequested(
        occurred_at=now,
        return_id=uuid.uuid4(),
        correlation_id=f"bench-{i}",
        shop_id="shop-1",
        platform="generic",
        platform_return_id=f"pr-{i}",
        order_id=f"o-{i}",
        kind="return_and_refund",
        customer=Customer(id=f"c-{i}", phone="+8613800000000", locale="zh-CN", timezone="Asia/Shanghai"),
        currency="CNY",
        paid_total=5980,
        lines=[ReturnLine(sku=f"SKU-{k}", qty=1, unit_price=2990, reason="size_too_small") for k in range(2)],
        requested_by=RequestedBy(type="customer"),
        requested_at=now,
    )


async def produce(bootstrap: str, n: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=256 * 1024)
    await producer.start()
    try:
        records = [event_record(sample_event(i)) for i in range(200)]
        futures = []
        for i in range(n):
            r = records[i % len(records)]
            headers = [(k, v.encode()) for k, v in r.headers.items()]
            futures.append(await producer.send(TOPIC, r.value, key=r.key, headers=headers))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def with_aiokafka(bootstrap: str, n: int, validate: bool) -> float:
    consumer = fresh_group_consumer(bootstrap, TOPIC, "hop")
    await consumer.start()
    try:
        seen, cpu0 = 0, None
        while seen < n:
            batches = await consumer.getmany(timeout_ms=20, max_records=500)
            records = [r for rs in batches.values() for r in rs]
            if not records:
                continue
            cpu0 = time.process_time() if cpu0 is None else cpu0
            if validate:
                for r in records:
                    decode_record(r)
            await consumer.commit()
            seen += len(records)
        return time.process_time() - (cpu0 or 0.0)
    finally:
        await consumer.stop()


async def with_faststream(bootstrap: str, n: int, decoder: Callable[..., Any] | None) -> float:
    broker = KafkaBroker(bootstrap, logger=None)
    done = asyncio.Event()
    state: dict[str, Any] = {"seen": 0, "cpu0": None}
    options: dict[str, Any] = {"decoder": decoder} if decoder is not None else {}
    sub = broker.subscriber(
        TOPIC,
        group_id=f"hop-{uuid.uuid4().hex[:8]}",
        batch=True,
        max_records=500,
        batch_timeout_ms=20,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.MANUAL,
        session_timeout_ms=2000,
        heartbeat_interval_ms=400,
        **options,
    )

    @sub
    async def handle(msg: KafkaMessage) -> None:
        if state["cpu0"] is None:
            state["cpu0"] = time.process_time()
        records = msg.raw_message if isinstance(msg.raw_message, tuple) else (msg.raw_message,)
        for r in records:
            decode_record(r)
        await msg.ack()
        state["seen"] += len(records)
        if state["seen"] >= n:
            done.set()

    await broker.start()
    try:
        await done.wait()
        return time.process_time() - state["cpu0"]
    finally:
        await broker.stop()


async def run(n: int) -> dict[str, Any]:
    kafka = EmbeddedKafka(free_port()).start()
    try:
        await create_topics(kafka.bootstrap, [(TOPIC, 4)])
        await produce(kafka.bootstrap, n)
        rows = {
            "aiokafka": await with_aiokafka(kafka.bootstrap, n, validate=False),
            "aiokafka + validate": await with_aiokafka(kafka.bootstrap, n, validate=True),
            "faststream default + validate": await with_faststream(kafka.bootstrap, n, decoder=None),
            "faststream runtime + validate": await with_faststream(kafka.bootstrap, n, decoder=keep_records_raw),
        }
    finally:
        kafka.stop()
    floor = rows["aiokafka"]
    return {
        "messages": n,
        "cpu_us_per_message": {k: round(1e6 * v / n, 1) for k, v in rows.items()},
        "ratio_to_aiokafka": {k: round(v / floor, 2) for k, v in rows.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--out", help="also write the JSON report here")
    a = ap.parse_args()
    report = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        **asyncio.run(run(a.messages)),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
