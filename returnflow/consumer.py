"""Idempotent batch consumer with bounded retries and a dead-letter topic.

A batch is applied in one PostgreSQL transaction: the event ids are recorded in
`processed_events` and the handler's writes (and outgoing events, through the outbox) commit
together; offsets are committed only after that. If a batch fails, its messages are applied one
at a time, each with bounded retries and backoff; a message that still fails goes to
`<topic>.dlq` (through the outbox, with headers naming topic, partition, offset and the error)
and the rest move on. Database outages are not the message's fault: they are retried until the
database answers, and nothing is dead-lettered for them.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg
import orjson
import structlog
from pydantic import ValidationError

from contracts.catalog import (
    HEADER_DLQ_ATTEMPTS,
    HEADER_DLQ_CONSUMER,
    HEADER_DLQ_ERROR_MESSAGE,
    HEADER_DLQ_ERROR_TYPE,
    HEADER_DLQ_OFFSET,
    HEADER_DLQ_PARTITION,
    HEADER_DLQ_TOPIC,
    HEADER_TYPE,
    dlq_topic,
)
from contracts.events import EVENT_TYPES, Message
from returnflow import metrics
from returnflow.db import Conn, DatabaseUnavailable
from returnflow.logging import get_logger
from returnflow.loops import Backoff
from returnflow.outbox import OutboxRecord, enqueue
from returnflow.tracing import Tracing, in_scope, mark_failed

log = get_logger("returnflow.consumer")

INFRA_ERRORS: tuple[type[Exception], ...] = (
    DatabaseUnavailable,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InterfaceError,
    # a connection the server ended in the middle of an operation can fail this way instead (seen in the
    # soak: notify's outcome write after an SMS was accepted failed with "cannot switch to state 15", the
    # outcome was lost, and the SMS went again once its lease ran out): a broken connection, retried
    asyncpg.InternalClientError,
    asyncpg.AdminShutdownError,
    ConnectionRefusedError,
    ConnectionResetError,
)


@dataclass
class Delivery:
    """One Kafka record, decoded."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, str]
    event: Message | None = None
    error: BaseException | None = None
    dedupe_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    timestamp: datetime | None = None  # the Kafka record's timestamp (signed commands' freshness)


Handler = Callable[[Conn, list[Delivery]], Awaitable[None]]

E = TypeVar("E", bound=Message)


class Batch:
    """The fresh (not yet applied) events of one consumed batch, in offset order per partition. A
    handler asks for the kinds it applies, already typed: `batch.of(ReturnRequested)`."""

    def __init__(self, deliveries: Sequence[Delivery]) -> None:
        self.deliveries = list(deliveries)
        self.events: list[Message] = [d.event for d in deliveries if d.event is not None]

    def of(self, kind: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, kind)]

    def delivered(self, kind: type[E]) -> list[tuple[E, Delivery]]:
        """The events of one kind with their records (raw value, timestamp): for signed commands."""
        return [(d.event, d) for d in self.deliveries if isinstance(d.event, kind)]

    def __len__(self) -> int:
        return len(self.events)


class PoisonMessage(Exception):
    """The message can never be applied (undecodable, invalid, unknown type)."""


def decode_record(record: Any) -> Delivery:
    headers = {k: (v.decode(errors="replace") if isinstance(v, bytes) else str(v)) for k, v in record.headers or ()}
    d = Delivery(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=record.value or b"",
        headers=headers,
        timestamp=_record_time(record),
    )
    try:
        d.event = _validate_as_labelled(d) or _validate(d.value)
        d.dedupe_id = str(d.event.event_id)
    except (orjson.JSONDecodeError, ValidationError, PoisonMessage) as exc:
        d.error = exc if isinstance(exc, PoisonMessage) else PoisonMessage(f"{type(exc).__name__}: {exc}")
        d.dedupe_id = f"{d.topic}:{d.partition}:{d.offset}"
    return d


def _record_time(record: Any) -> datetime | None:
    ms = getattr(record, "timestamp", None)
    return datetime.fromtimestamp(ms / 1000, UTC) if isinstance(ms, int) and ms >= 0 else None


def _validate_as_labelled(d: Delivery) -> Message | None:
    """The fast path: the type header names the model, which parses the JSON in one pass. None when
    the header is missing or does not fit the body (the slow path then says precisely what is wrong)."""
    model = EVENT_TYPES.get(d.headers.get(HEADER_TYPE, ""))
    if model is None:
        return None
    try:
        return model.model_validate_json(d.value)
    except ValidationError:
        return None


def _validate(value: bytes) -> Message:
    data = orjson.loads(value)
    if not isinstance(data, dict):
        raise PoisonMessage("message value is not a JSON object")
    model = EVENT_TYPES.get(str(data.get("type")))
    if model is None:
        raise PoisonMessage(f"unknown message type {data.get('type')!r}")
    return model.model_validate(data)


class IdempotentConsumer:
    def __init__(
        self,
        *,
        name: str,
        pool: asyncpg.Pool,
        handler: Handler,
        max_attempts: int = 4,
        backoff_base_s: float = 0.05,
        backoff_max_s: float = 2.0,
        tracing: Tracing | None = None,
    ) -> None:
        self.name = name
        self.tracing = tracing or Tracing.disabled()
        self.pool = pool
        self.handler = handler
        self.max_attempts = max_attempts
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s

    async def process_records(self, records: Sequence[Any]) -> None:
        await self.process([decode_record(r) for r in records])

    async def process(self, deliveries: list[Delivery]) -> None:
        good = [d for d in deliveries if d.error is None]
        for d in deliveries:
            if d.error is not None:
                await self._infra_retry(lambda d=d: self._dead_letter(d, d.error, 1))  # type: ignore[misc]
        if not good:
            return
        started = time.perf_counter()
        # one span per record, child of its traceparent, around the dedupe + apply; what the handlers
        # write goes out under the span of the event it came from (tracing.Consumed.scope)
        trace = self.tracing.consume(self.name, good) if self.tracing.enabled else None
        try:
            with in_scope(trace.scope if trace is not None else None):
                try:
                    await self._infra_retry(lambda: self._apply(good))
                except Exception:
                    for d in good:
                        await self._apply_one(d)
        finally:
            if trace is not None:
                trace.end()
        metrics.BATCH_SECONDS.labels(self.name).observe(time.perf_counter() - started)

    async def _apply(self, batch: list[Delivery]) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            fresh_ids = {
                r["event_id"]
                for r in await conn.fetch(
                    """INSERT INTO processed_events (consumer, event_id)
                       SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING RETURNING event_id""",
                    self.name,
                    [d.dedupe_id for d in batch],
                )
            }
            fresh: list[Delivery] = []
            for d in batch:
                if d.dedupe_id in fresh_ids:
                    fresh.append(d)
                    fresh_ids.discard(d.dedupe_id)  # the same event twice in one batch counts once
            if fresh:
                await self.handler(conn, fresh)
        self._count(batch, fresh)

    def _count(self, batch: list[Delivery], fresh: list[Delivery]) -> None:
        by_topic: dict[tuple[str, str], int] = {}
        fresh_keys = {id(d) for d in fresh}
        for d in batch:
            k = (d.topic, "processed" if id(d) in fresh_keys else "duplicate")
            by_topic[k] = by_topic.get(k, 0) + 1
        for (topic, outcome), n in by_topic.items():
            metrics.MESSAGES.labels(self.name, topic, outcome).inc(n)

    async def _apply_one(self, d: Delivery) -> None:
        last: BaseException | None = None
        backoff = Backoff(self.backoff_base_s, self.backoff_max_s)
        for attempt in range(1, self.max_attempts + 1):
            try:
                await self._infra_retry(lambda: self._apply([d]))
                return
            except Exception as exc:
                last = exc
                metrics.HANDLER_RETRIES.labels(self.name).inc()
                if attempt < self.max_attempts:
                    await backoff.sleep()
        assert last is not None
        await self._infra_retry(lambda: self._dead_letter(d, last, self.max_attempts))

    def _dlq_headers(self, d: Delivery, err_type: str, err_msg: str, attempts: int) -> dict[str, str]:
        """The original headers plus where the message came from and why it failed."""
        return {
            **d.headers,
            HEADER_DLQ_TOPIC: d.topic,
            HEADER_DLQ_PARTITION: str(d.partition),
            HEADER_DLQ_OFFSET: str(d.offset),
            HEADER_DLQ_CONSUMER: self.name,
            HEADER_DLQ_ERROR_TYPE: err_type,
            HEADER_DLQ_ERROR_MESSAGE: err_msg,
            HEADER_DLQ_ATTEMPTS: str(attempts),
        }

    async def _dead_letter(self, d: Delivery, error: BaseException | None, attempts: int) -> None:
        err_type = type(error).__name__ if error else "Unknown"
        err_msg = str(error)[:1000] if error else ""
        headers = self._dlq_headers(d, err_type, err_msg, attempts)
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """INSERT INTO dead_letters (consumer, topic, partition, "offset", key, value, headers,
                       error_type, error_message, attempts)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)""",
                *(self.name, d.topic, d.partition, d.offset, d.key, d.value, headers, err_type, err_msg, attempts),
            )
            await enqueue(conn, [OutboxRecord(dlq_topic(d.topic), d.key, d.value, headers)])
        metrics.MESSAGES.labels(self.name, d.topic, "dead_lettered").inc()
        correlation = d.event.correlation_id if d.event else d.headers.get("rf-correlation-id")
        mark_failed(correlation, f"dead-lettered: {err_type}")
        with structlog.contextvars.bound_contextvars(correlation_id=correlation):
            log.error(
                "message moved to dead-letter topic",
                consumer=self.name,
                topic=d.topic,
                partition=d.partition,
                offset=d.offset,
                error_type=err_type,
                error=err_msg,
                attempts=attempts,
            )

    async def _infra_retry(self, fn: Callable[[], Awaitable[None]]) -> None:
        """Run fn; on database/network outages wait and try again, without counting attempts."""
        backoff = Backoff(self.backoff_base_s, self.backoff_max_s)
        while True:
            try:
                await fn()
                return
            except INFRA_ERRORS as exc:
                log.warning("database unavailable; retrying", consumer=self.name, error=repr(exc))
                metrics.DATABASE_WAITS.labels(self.name).inc()
                await backoff.sleep()
