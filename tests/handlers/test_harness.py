"""The handler tier's harness applies batches as a running consumer does: one transaction, duplicates
dropped by event id, a poison message dead-lettered while the rest of the batch applies."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from contracts.catalog import topic_of
from contracts.events import ReturnCancelled, TrackingRegistered
from returnflow.consumer import Batch, Delivery
from returnflow.db import Conn
from returnflow.outbox import enqueue
from returnflow.service import ConsumerSpec, Runtime, ServiceSpec
from returnflow.settings import ServiceSettings, Settings
from tests.handlers.harness import delivery_of, harness


@dataclass
class EchoContext:
    seen: list[str]


async def build(rt: Runtime, settings: ServiceSettings) -> EchoContext:
    return EchoContext(seen=[])


async def echo(ctx: EchoContext, conn: Conn, batch: Batch) -> None:
    """Cancel every return whose tracking number is registered (a toy rule)."""
    registered = batch.of(TrackingRegistered)
    ctx.seen.extend(e.tracking_no for e in registered)
    cancelled = [
        ReturnCancelled(
            occurred_at=e.occurred_at, return_id=e.return_id, correlation_id=e.correlation_id, reason="echo"
        )
        for e in registered
    ]
    await enqueue(conn, cancelled)


ECHO: ServiceSpec[EchoContext] = ServiceSpec(
    name="echo",
    folder=Path(__file__).parents[1] / "integration" / "_nomigrations",
    context=build,
    consumers=[ConsumerSpec("tracking", [topic_of(TrackingRegistered)], apply=echo)],
)


def registered(tracking_no: str) -> TrackingRegistered:
    return TrackingRegistered(
        occurred_at=datetime.now(UTC), return_id=uuid.uuid4(), correlation_id="c-1", tracking_no=tracking_no
    )


async def test_a_batch_is_applied_once_and_its_events_reach_the_outbox(handler_settings: Settings) -> None:
    first, second = registered("SF1"), registered("SF2")
    async with harness(ECHO, handler_settings) as h:
        await h.apply("tracking", [first, second, first])  # the same event twice in one batch
        await h.apply("tracking", [second])  # redelivered later
        assert h.ctx.seen == ["SF1", "SF2"]
        cancelled = await h.published(ReturnCancelled)
        assert [e.return_id for e in cancelled] == [first.return_id, second.return_id]


async def test_a_poison_message_is_dead_lettered_and_the_rest_applies(handler_settings: Settings) -> None:
    good = registered("SF3")
    poison = delivery_of(registered("SF4"))
    poison = Delivery(**{**poison.__dict__, "value": b"{not json", "event": None, "error": ValueError("bad json")})
    async with harness(ECHO, handler_settings) as h:
        await h.apply("tracking", [poison, good])
        assert h.ctx.seen == ["SF3"]
        (dead,) = await h.dead_letters()
        assert dead["topic"] == topic_of(TrackingRegistered) and dead["consumer"] == "echo.tracking"
