"""The handler tier: a service's consumer handlers and worker steps driven against a real PostgreSQL,
without a broker. Events are applied exactly as the service's consumer applies them (one transaction,
dedupe by event id, poison messages dead-lettered), and what the service would publish is read from
its outbox.

    async with harness(SPEC, handler_settings, RefundsSettings(...)) as h:
        await h.apply("lifecycle", [requested, scanned])
        issued = await h.published(RefundIssued)
        ...
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import asyncpg
import orjson

from contracts.catalog import HEADER_CORRELATION_ID, HEADER_EVENT_ID, HEADER_TYPE, HEADER_VERSION, topic_of
from contracts.events import EVENT_TYPES, Message
from returnflow import db
from returnflow.consumer import Delivery
from returnflow.kafka import make_broker
from returnflow.service import ConsumerSpec, Runtime, ServiceSpec, consumer_for, relay_for
from returnflow.settings import ServiceSettings, Settings
from returnflow.shops import Shops

E = TypeVar("E", bound=Message)


def delivery_of(
    event: Message, offset: int = 0, partition: int = 0, timestamp: datetime | None = None, value: bytes | None = None
) -> Delivery:
    """An event as the consumer receives it from its topic: its record stamped when the event occurred
    (or at `timestamp`), its value the event's JSON (or `value`, bytes as a producer wrote them)."""
    return Delivery(
        topic=topic_of(type(event)),
        partition=partition,
        offset=offset,
        key=str(event.return_id).encode(),
        value=value if value is not None else event.model_dump_json().encode(),
        headers={
            HEADER_TYPE: event.type,
            HEADER_VERSION: str(event.version),
            HEADER_CORRELATION_ID: event.correlation_id,
            HEADER_EVENT_ID: str(event.event_id),
        },
        event=event,
        dedupe_id=str(event.event_id),
        timestamp=timestamp or event.occurred_at,
    )


@dataclass
class Harness:
    rt: Runtime
    _offset: int = 0
    _seen_outbox_id: int = 0
    _published: list[Message] = field(default_factory=list)

    @property
    def ctx(self) -> Any:
        return self.rt.context

    @property
    def pool(self) -> asyncpg.Pool:
        return self.rt.pool

    def _consumer_spec(self, name: str) -> ConsumerSpec[Any]:
        for c in self.rt.spec.consumers:
            if c.name == name:
                return c
        raise KeyError(f"{self.rt.spec.name} has no consumer {name!r}")

    async def apply(self, consumer: str, events: Sequence[Message | Delivery]) -> None:
        """Apply one batch to consumer group `<service>.<consumer>`, as the running service would."""
        deliveries = []
        for e in events:
            self._offset += 1
            deliveries.append(e if isinstance(e, Delivery) else delivery_of(e, self._offset))
        await consumer_for(self.rt, self._consumer_spec(consumer)).process(deliveries)

    async def outbox(self) -> list[tuple[str, dict[str, Any], dict[str, str]]]:
        """Every outbox row so far: (topic, decoded value, headers)."""
        rows = await self.pool.fetch("SELECT topic, value, headers FROM outbox ORDER BY id")
        return [(r["topic"], orjson.loads(r["value"]), dict(r["headers"])) for r in rows]

    async def new_events(self) -> list[Message]:
        """The events written to the outbox since the last call, validated as their contract models."""
        rows = await self.pool.fetch(
            "SELECT id, value FROM outbox WHERE id > $1 AND topic NOT LIKE '%.dlq' ORDER BY id", self._seen_outbox_id
        )
        out: list[Message] = []
        for r in rows:
            self._seen_outbox_id = max(self._seen_outbox_id, r["id"])
            data = orjson.loads(r["value"])
            out.append(EVENT_TYPES[data["type"]].model_validate(data))
        self._published.extend(out)
        return out

    async def published(self, kind: type[E]) -> list[E]:
        """Every event of this kind the service has written to its outbox."""
        await self.new_events()
        return [e for e in self._published if isinstance(e, kind)]

    async def dead_letters(self) -> list[asyncpg.Record]:
        return list(await self.pool.fetch("SELECT * FROM dead_letters ORDER BY id"))


@contextlib.asynccontextmanager
async def harness(
    spec: ServiceSpec[Any],
    settings: Settings,
    service_settings: ServiceSettings | None = None,
    shops: Shops | None = None,
) -> AsyncIterator[Harness]:
    """The service's schema migrated, its pool open and its context built, as at start; no broker, no
    HTTP server, no background workers (tests call worker steps themselves)."""
    assert settings.database_url is not None
    dsn = settings.database_url.get_secret_value()
    bootstrap = settings.kafka_bootstrap or "127.0.0.1:9"  # never contacted: nothing here publishes
    rt = Runtime(
        spec=spec,
        settings=settings,
        dsn=dsn,
        bootstrap=bootstrap,
        broker=make_broker(settings, bootstrap, client_id=f"handler-tier-{spec.name}"),
        service_settings=service_settings or spec.settings(),
        shops=shops or Shops.load(settings.shops_file),  # else RETURNFLOW_SHOPS_FILE, as at a service's start
    )
    await db.migrate(dsn, spec.schema, spec.migrations())
    rt.pool = await db.create_pool(dsn, spec.schema, spec.name, 1, 4)
    rt.relay = relay_for(rt)
    try:
        if spec.context is not None:
            rt.context = await spec.context(rt, rt.service_settings)
        yield Harness(rt)
    finally:
        if spec.close is not None and rt.context is not None:
            await spec.close(rt.context)
        await rt.pool.close()
