"""Read topics with a real consumer, for assertions."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer


async def read_topic(bootstrap: str, topic: str, expect: int, timeout_s: float = 15.0) -> list[Any]:
    """Read a topic from the start until at least `expect` records arrived, then on to its end (until a
    fetch returns nothing: the embedded broker under-reports end offsets, so they are not used). To be
    sure nothing more will come, wait for the idle barrier (tests.idle) before reading."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for recs in batch.values():
                records.extend(recs)
            if len(records) >= expect and not batch:
                break
    finally:
        await consumer.stop()
    return records


def values(records: list[Any]) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in records]


def headers(record: Any) -> dict[str, str]:
    return {k: v.decode() for k, v in record.headers}


async def wait_for(predicate: Any, timeout_s: float = 15.0, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        result = await predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


async def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """Committed offset per partition of `topic` for `group`, read without joining the group."""
    from aiokafka import TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        out = {}
        for p in parts:
            out[p] = (await consumer.committed(TopicPartition(topic, p))) or 0
        return out
    finally:
        await consumer.stop()
