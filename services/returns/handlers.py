"""The steps of the returns service: accept platform webhooks (a group commit), record a platform's
tracking/cancel event, and put every lifecycle event on its return's timeline. Each reads as
load → pure decision (rules) → save (+ events through the outbox)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

import asyncpg

from contracts.events import Message
from returnflow.batching import GroupCommitter
from returnflow.consumer import Batch
from returnflow.db import Conn
from returnflow.outbox import enqueue
from returnflow.settings import Settings
from services.returns import events, repository, rules, timeline
from services.returns.rules import Intake, IntakeResult, TooLateToCancel
from services.returns.schemas import ReturnEventWebhook
from services.returns.settings import ReturnsSettings


@dataclass
class ReturnsContext:
    pool: asyncpg.Pool
    settings: ReturnsSettings
    runtime_settings: Settings  # webhook secrets and body limits
    intake: GroupCommitter[Intake, IntakeResult]


# -- the timeline consumer ---------------------------------------------------------------------------


async def apply_timeline(ctx: ReturnsContext, conn: Conn, batch: Batch) -> None:
    """Every lifecycle event becomes a timeline entry and may move its return to a later status (out
    of order too: a status never moves back)."""
    await put_on_timeline(conn, batch.events)


async def put_on_timeline(conn: Conn, lifecycle: Sequence[Message]) -> None:
    entries = [timeline.entry(e) for e in lifecycle]
    await repository.add_timeline(conn, entries)
    await repository.advance_status(conn, rules.latest_statuses((e.return_id, e.type, e.data) for e in entries))


# -- intake: platform webhooks, many in one transaction ------------------------------------------------


async def accept_returns(conn: Conn, items: Sequence[Intake]) -> list[IntakeResult]:
    """New returns inserted with their lines, return-requested event and timeline entry; a webhook
    delivered again, or naming a return accepted before, is answered with that return."""
    now = await repository.now(conn)
    known = await repository.known_deliveries(conn, [it.delivery for it in items])
    candidates = rules.new_return_candidates(items, known)
    created = await repository.insert_returns(conn, list(candidates.values()), rules.REQUESTED)
    return_of = {key: rid for key, (rid, _) in candidates.items()}
    # lost to a return accepted earlier (or by a concurrent batch): answer with that return
    return_of |= await repository.returns_by_platform_key(conn, [k for k, r in return_of.items() if r not in created])
    new = [(rid, it) for rid, it in candidates.values() if rid in created]
    await repository.insert_lines(conn, new)
    requested = [events.return_requested(rid, it, now) for rid, it in new]
    await enqueue(conn, requested)
    await repository.add_timeline(conn, [timeline.entry(e) for e in requested])
    results, deliveries = rules.intake_results(items, known, return_of, created)
    await repository.record_deliveries(conn, deliveries)
    return results


# -- a platform's event on a known return: tracking number registered, or cancelled -------------------


@dataclass(frozen=True)
class ReturnEvent:
    source: str  # e.g. "generic-events": the deliveries of this endpoint, apart from the returns webhook
    delivery_id: str
    platform_return_id: str
    body: ReturnEventWebhook
    correlation_id: str


@dataclass(frozen=True)
class UnknownReturn:
    pass


@dataclass(frozen=True)
class AlreadyDone:
    return_id: UUID
    status: str


@dataclass(frozen=True)
class Recorded:
    return_id: UUID
    event_type: str


ReturnEventOutcome = UnknownReturn | AlreadyDone | TooLateToCancel | Recorded


async def record_return_event(ctx: ReturnsContext, cmd: ReturnEvent) -> ReturnEventOutcome:
    async with ctx.pool.acquire() as conn, conn.transaction():
        ret = await repository.lock_by_platform_key(conn, cmd.body.shop_id, cmd.platform_return_id)
        if ret is None:
            return UnknownReturn()
        if await repository.find_delivery(conn, cmd.source, cmd.delivery_id):
            return AlreadyDone(ret.id, ret.status.name)
        decision = rules.decide_return_event(ret.status, cmd.body)
        if isinstance(decision, rules.AlreadyCancelled):
            return AlreadyDone(ret.id, ret.status.name)
        if isinstance(decision, TooLateToCancel):
            return decision
        event = events.return_event(ret.id, decision, cmd.correlation_id, datetime.now(UTC))
        if isinstance(decision, rules.RegisterTracking):
            await repository.set_tracking_no(conn, ret.id, decision.tracking_no)
        await enqueue(conn, [event])
        await put_on_timeline(conn, [event])
        await repository.record_deliveries(conn, [(cmd.source, cmd.delivery_id, ret.id)])
        return Recorded(ret.id, event.type)
