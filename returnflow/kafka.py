"""Kafka plumbing on FastStream/aiokafka: broker factory, topic creation, publish adapter."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from faststream.kafka import KafkaBroker

from contracts.catalog import HEADER_CORRELATION_ID, all_topic_names
from returnflow.settings import Settings


def make_broker(settings: Settings, bootstrap: str, client_id: str) -> KafkaBroker:
    return KafkaBroker(
        bootstrap,
        client_id=client_id,
        acks="all" if settings.kafka_acks == "all" else int(settings.kafka_acks),
        enable_idempotence=settings.kafka_enable_idempotence,
        linger_ms=settings.kafka_linger_ms,
        max_batch_size=settings.kafka_max_batch_size,
        logger=None,  # FastStream's per-message log lines are a large cost; we log what matters
        graceful_timeout=15.0,
    )


def publisher_for(broker: KafkaBroker) -> Any:
    async def publish(topic: str, key: bytes | None, value: bytes, headers: dict[str, str]) -> Any:
        return await broker.publish(
            value,
            topic,
            key=key,
            headers=headers,
            correlation_id=headers.get(HEADER_CORRELATION_ID),
            no_confirm=True,
        )

    return publish


async def create_topics(
    bootstrap: str,
    topics: Iterable[tuple[str, int]] | None = None,
    *,
    replication_factor: int = 1,
    configs: Mapping[str, Mapping[str, str]] | None = None,
) -> list[str]:
    """Create missing topics (idempotent). Returns the names created.

    `replication_factor` and per-topic `configs` (retention.ms, min.insync.replicas...) are for a real
    cluster (`returnflow topics create`); the embedded broker takes the defaults."""
    wanted = list(topics if topics is not None else all_topic_names())
    configs = configs or {}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(n, num_partitions=p, replication_factor=replication_factor, topic_configs=dict(configs.get(n, {})))
            for n, p in wanted
            if n not in existing
        ]
        created: list[str] = []
        for t in missing:  # one at a time: a racing creator makes only that topic fail
            try:
                await admin.create_topics([t])
                created.append(t.name)
            except TopicAlreadyExistsError:
                pass
        return created
    finally:
        await admin.close()


async def wait_for_broker(bootstrap: str, timeout_s: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    last: Exception | None = None
    while asyncio.get_running_loop().time() < deadline:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
        try:
            await admin.start()
            await admin.list_topics()
            return
        except Exception as exc:
            last = exc
            await asyncio.sleep(0.2)
        finally:
            try:
                await admin.close()
            except Exception:
                pass
    raise TimeoutError(f"Kafka broker at {bootstrap} did not answer within {timeout_s}s: {last!r}")
