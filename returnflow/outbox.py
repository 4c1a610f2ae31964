"""Transactional outbox and its relay.

`enqueue` writes events in the caller's transaction. The relay claims unpublished rows with
FOR UPDATE SKIP LOCKED, publishes them as one batch, marks them published and commits: a crash
anywhere before the commit leaves the rows unclaimed, so they are published again (at-least-once;
consumers are idempotent). Published rows are kept for a retention period; when the broker reports
an end offset below one the relay has seen acknowledged, the broker lost its log (the embedded
broker is memory-only) and every retained row is published again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from opentelemetry import trace

from contracts.catalog import (
    HEADER_CORRELATION_ID,
    HEADER_EVENT_ID,
    HEADER_TYPE,
    HEADER_VERSION,
    topic_for_type,
)
from contracts.events import Message
from returnflow import metrics
from returnflow.db import Conn
from returnflow.logging import get_logger
from returnflow.loops import Worker
from returnflow.tracing import TRACEPARENT, Tracing, current_scope, traceparent_for

log = get_logger("returnflow.outbox")


@dataclass(frozen=True)
class OutboxRecord:
    topic: str
    key: bytes | None
    value: bytes
    headers: dict[str, str] = field(default_factory=dict)


def encode_event(event: Message) -> bytes:
    return event.model_dump_json().encode()


def event_record(event: Message, topic: str | None = None) -> OutboxRecord:
    return OutboxRecord(
        topic=topic or topic_for_type(event.type).name,
        key=str(event.return_id).encode(),
        value=encode_event(event),
        headers={
            HEADER_TYPE: event.type,
            HEADER_VERSION: str(event.version),
            HEADER_CORRELATION_ID: event.correlation_id,
            HEADER_EVENT_ID: str(event.event_id),
        },
    )


async def enqueue(conn: Conn, items: Iterable[Message | OutboxRecord]) -> int:
    """Write events to the outbox inside the caller's transaction (one statement for the batch)."""
    records = [i if isinstance(i, OutboxRecord) else event_record(i) for i in items]
    if not records:
        return 0
    records = with_trace_context(records)
    await conn.execute(
        """INSERT INTO outbox (topic, key, value, headers)
           SELECT * FROM unnest($1::text[], $2::bytea[], $3::bytea[], $4::jsonb[])""",
        [r.topic for r in records],
        [r.key for r in records],
        [r.value for r in records],
        [r.headers for r in records],
    )
    return len(records)


def with_trace_context(records: list[OutboxRecord]) -> list[OutboxRecord]:
    """Each record with the W3C traceparent of the trace it continues (the span in scope for its correlation
    id: a request's, a consumed record's, a resumed worker's), unless it carries one already (a DLQ copy)."""
    if current_scope() is None and not trace.get_current_span().get_span_context().is_valid:
        return records  # outside any trace (tracing off, a housekeeping write): nothing to look up
    out = []
    for r in records:
        if TRACEPARENT not in r.headers:
            key = r.key.decode(errors="replace") if r.key else None
            traceparent = traceparent_for(r.headers.get(HEADER_CORRELATION_ID), key)
            if traceparent is not None:
                r = OutboxRecord(r.topic, r.key, r.value, {**r.headers, TRACEPARENT: traceparent})
        out.append(r)
    return out


class Publisher(Protocol):
    async def __call__(
        self, topic: str, key: bytes | None, value: bytes, headers: dict[str, str]
    ) -> Awaitable[Any]: ...


class Relay:
    """Publishes one service's outbox. Run one per process; several may run safely."""

    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        dsn: str,
        schema: str,
        publish: Publisher,
        bootstrap: str,
        batch_size: int = 500,
        poll_interval_s: float = 1.0,
        retention_hours: float = 168.0,
        dedupe_retention_hours: float = 192.0,
        broker_check_interval_s: float = 5.0,
        ensure_topics: Callable[[], Awaitable[None]] | None = None,
        on_broker_loss: Callable[[], Awaitable[None]] | None = None,
        kafka_options: Mapping[str, Any] | None = None,
        tracing: Tracing | None = None,
        listen: bool = True,
        gather_s: float = 0.0,
    ) -> None:
        self.pool = pool
        self.dsn = dsn
        self.schema = schema
        self.publish = publish
        self.bootstrap = bootstrap
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        self.retention_hours = retention_hours
        self.dedupe_retention_hours = dedupe_retention_hours
        self.broker_check_interval_s = broker_check_interval_s
        self.ensure_topics = ensure_topics
        self.on_broker_loss = on_broker_loss
        self.kafka_options = dict(kafka_options or {})  # the client's credentials (returnflow.kafka)
        self.tracing = tracing or Tracing.disabled()
        self._stopping = False
        self._offsets_consumer: AIOKafkaConsumer | None = None
        self.published_total = 0
        self._next_check = 0.0
        self._next_purge = time.monotonic() + 60
        self._epoch: int | None = None  # broker_epoch as this process last saw it
        # `listen`: woken by the outbox trigger's NOTIFY; else by `wake()` and the poll interval (a second relay
        # of the service in another process, for rows its own process writes)
        channel = f"{schema}_outbox" if listen else None
        self.worker = Worker(
            f"{schema}.relay", self.step, poll_s=poll_interval_s, dsn=dsn, channel=channel, gather_s=gather_s
        )

    def wake(self) -> None:
        self.worker.wake()

    # -- one batch ---------------------------------------------------------------------------
    async def publish_batch(self) -> int:
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """SELECT id, topic, key, value, headers FROM outbox
                   WHERE published_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED""",
                self.batch_size,
            )
            if not rows:
                return 0
            spans = []
            futures = []
            for r in rows:
                headers = r["headers"]
                if self.tracing.enabled and TRACEPARENT in headers:
                    # a sampled trace gets the relay's publish span (the record's parent); others go as stored
                    headers, span = self.tracing.publish(r["topic"], headers, r["key"])
                    if span is not None:
                        spans.append(span)
                futures.append(await self.publish(r["topic"], r["key"], r["value"], headers))
            try:
                metas = await asyncio.gather(*futures)
            finally:
                for span in spans:
                    span.end()
            # A lower bound of each partition's end offset once this batch is acked: the lowest offset
            # we got, plus one. (Not the highest: Tansu reports the end offset as the base offset of the
            # last record batch plus one, so only this bound holds on both it and Apache Kafka.)
            high: dict[tuple[str, int], int] = {}
            for meta in metas:
                k = (meta.topic, meta.partition)
                high[k] = min(high.get(k, meta.offset + 1), meta.offset + 1)
            # one statement (one round trip): mark the rows published and raise the offset bounds
            await conn.execute(
                """WITH published AS (UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[]))
                   INSERT INTO outbox_offsets (topic, partition, next_offset)
                   SELECT * FROM unnest($2::text[], $3::int[], $4::bigint[])
                   ON CONFLICT (topic, partition)
                   DO UPDATE SET next_offset = GREATEST(outbox_offsets.next_offset, EXCLUDED.next_offset)""",
                [r["id"] for r in rows],
                [k[0] for k in high],
                [k[1] for k in high],
                list(high.values()),
            )
        self.published_total += len(rows)
        metrics.OUTBOX_PUBLISHED.labels(self.schema).inc(len(rows))
        return len(rows)

    async def drain(self) -> int:
        total = 0
        while not self._stopping:
            n = await self.publish_batch()
            total += n
            if n < self.batch_size:
                break
        return total

    # -- broker loss -------------------------------------------------------------------------
    async def broker_lost_log(self) -> bool:
        """True when the broker's end offset of any partition we published to is below what it acked."""
        rows = await self.pool.fetch("SELECT topic, partition, next_offset FROM outbox_offsets")
        if not rows:
            return False
        if self._offsets_consumer is None:
            self._offsets_consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap, enable_auto_commit=False, **self.kafka_options
            )
            await self._offsets_consumer.start()
        consumer = self._offsets_consumer
        tps = [TopicPartition(r["topic"], r["partition"]) for r in rows]
        ends = await consumer.end_offsets(tps)
        return any(ends.get(TopicPartition(r["topic"], r["partition"]), 0) < r["next_offset"] for r in rows)

    async def republish_retained(self) -> int:
        if self.ensure_topics is not None:
            await self.ensure_topics()
        if self.on_broker_loss is not None:
            # This process's consumers may still hold positions in the lost log; the new log starts
            # over at offset 0, so they read it from the start (their handlers drop what they applied).
            await self.on_broker_loss()
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("LOCK TABLE outbox_offsets IN EXCLUSIVE MODE")
            n = await conn.fetchval(
                """WITH r AS (UPDATE outbox SET published_at = NULL WHERE published_at IS NOT NULL RETURNING 1)
                   SELECT count(*) FROM r"""
            )
            await conn.execute("DELETE FROM outbox_offsets")
            self._epoch = await conn.fetchval("UPDATE broker_epoch SET epoch = epoch + 1 RETURNING epoch")
        log.warning("broker lost its log: re-publishing retained outbox rows", schema=self.schema, rows=n)
        return int(n)

    async def epoch_moved(self) -> bool:
        """Whether another process of this service found the broker's log lost since this one last looked."""
        epoch = await self.pool.fetchval("SELECT epoch FROM broker_epoch")
        moved = self._epoch is not None and epoch != self._epoch
        self._epoch = epoch
        return moved

    async def check_broker(self) -> None:
        try:
            if await self.broker_lost_log():
                await self.republish_retained()
                self.wake()
            elif await self.epoch_moved() and self.on_broker_loss is not None:
                await self.on_broker_loss()  # its relay re-published; our consumers read the new log
        except Exception as exc:  # the broker may be restarting; try again next round
            log.warning("broker offset check failed", schema=self.schema, error=repr(exc))

    async def purge(self, chunk: int = 10_000) -> int:
        """Housekeeping of the schema's plumbing tables: published outbox rows past their retention, and
        consumed event ids past the dedupe retention (in chunks, so no statement runs long)."""
        deleted = 0
        for sql, hours in (
            (
                """DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE published_at IS NOT NULL
                   AND created_at < now() - make_interval(secs => $1) LIMIT $2)""",
                self.retention_hours,
            ),
            (
                """DELETE FROM processed_events WHERE ctid IN (SELECT ctid FROM processed_events
                   WHERE processed_at < now() - make_interval(secs => $1) LIMIT $2)""",
                self.dedupe_retention_hours,
            ),
        ):
            while not self._stopping:
                n = int((await self.pool.execute(sql, hours * 3600, chunk)).split()[-1])
                deleted += n
                if n < chunk:
                    break
        return deleted

    async def backlog(self) -> tuple[int, float]:
        row = await self.pool.fetchrow(
            """SELECT count(*) AS n, COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0) AS age
               FROM outbox WHERE published_at IS NULL"""
        )
        assert row is not None
        return int(row["n"]), float(row["age"])

    # -- loop --------------------------------------------------------------------------------
    async def step(self) -> None:
        """One round: publish what is pending; now and then check the broker kept its log, report the
        backlog, and purge what is past retention. (The worker retries a failed round with backoff and
        re-opens the LISTEN connection after the database comes back.)"""
        await self.drain()
        now = time.monotonic()
        if now >= self._next_check:
            await self.check_broker()
            n, age = await self.backlog()
            metrics.OUTBOX_BACKLOG.labels(self.schema).set(n)
            metrics.OUTBOX_AGE.labels(self.schema).set(age)
            self._next_check = now + self.broker_check_interval_s
        if now >= self._next_purge:
            await self.purge()
            self._next_purge = now + 600

    async def run(self) -> None:
        """Publish until stopped; survives database and broker outages."""
        try:
            await self.worker.run()
        finally:
            if self._offsets_consumer is not None:
                with contextlib.suppress(Exception):
                    await self._offsets_consumer.stop()

    async def stop(self) -> None:
        """Flush what is pending, then stop the loop."""
        with contextlib.suppress(Exception):
            await self.drain()
        self._stopping = True
        self.worker.stop()
