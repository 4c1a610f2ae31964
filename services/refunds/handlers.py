"""The refunds service's steps: the lifecycle consumer (facts in, the policy applied, people's commands
decided), a person's decision over HTTP, and the payment worker. Each step loads through the repository,
decides with the pure rules (services/refunds/rules.py), saves, and writes its events to the outbox."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any
from uuid import UUID

import asyncpg

from contracts.events import (
    ExchangeOutOfStock,
    ParcelScanned,
    RefundCommand,
    ReplacementShipped,
    ReturnCancelled,
    ReturnReceived,
    ReturnRequested,
)
from returnflow import commands as signed_commands
from returnflow import metrics
from returnflow.consumer import Batch, Delivery
from returnflow.db import Conn
from returnflow.logging import get_logger
from returnflow.loops import Worker, retry_delay_s
from returnflow.outbox import enqueue
from returnflow.service import Runtime
from returnflow.tracing import ATTR_RETURN_ID, Scope, in_scope, resumed
from services.refunds import events, repository, rules
from services.refunds.providers import Gateways, build_gateway
from services.refunds.rules import (
    Actor,
    CloseEscalation,
    CommandIn,
    Due,
    Escalate,
    FlagClawback,
    Outcome,
    PaymentResult,
    Planned,
    Policy,
    Reescalate,
    RefundNow,
    Resolution,
    WebhookOutcome,
)
from services.refunds.settings import RefundsSettings

log = get_logger("refunds")


@dataclass
class RefundsContext:
    """What the refunds handlers and routes share, built once the pool exists."""

    pool: asyncpg.Pool
    settings: RefundsSettings
    policy: Policy  # the environment's; a shop in the shops file may have its own (policy_for)
    gateways: Gateways
    dsn: str
    payments_channel: str  # NOTIFYed when a refund is added to the ledger
    paying: asyncio.Semaphore  # at most `payment_concurrency` gateway calls at once
    freshness_s: float = 300.0  # a signed command's age against its Kafka record (Settings.command_freshness_s)
    clock_skew_s: float = 30.0
    _shop_policies: dict[str, Policy] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.gateways.shops.on_change.append(lambda _: self._shop_policies.clear())

    def policy_for(self, shop_id: str | None) -> Policy:
        shop = self.gateways.shops.get(shop_id)
        if shop_id is None or shop is None:
            return self.policy
        if (p := self._shop_policies.get(shop_id)) is None:
            p = self._shop_policies[shop_id] = rules.shop_policy(self.policy, shop)
        return p

    def shop_policies(self, shop_ids: Iterable[str]) -> dict[str, Policy]:
        """The policies of these shops that differ from the environment's (those listed in the shops file)."""
        return {sid: self.policy_for(sid) for sid in set(shop_ids) if self.gateways.shops.get(sid) is not None}


async def build_context(rt: Runtime, s: RefundsSettings) -> RefundsContext:
    policy = rules.policy_from(s)  # fails the start, in one line, on a bad authority configuration
    gateways = Gateways(s, build_gateway(s), rt.shops)
    paying = asyncio.Semaphore(s.payment_concurrency)
    return RefundsContext(
        rt.pool,
        s,
        policy,
        gateways,
        rt.dsn,
        f"{rt.spec.schema}_payments",
        paying,
        rt.settings.command_freshness_s,
        rt.settings.command_clock_skew_s,
    )


async def close_context(ctx: RefundsContext) -> None:
    await ctx.gateways.close()


# -- the lifecycle consumer ---------------------------------------------------------------------------------


async def apply_lifecycle(ctx: RefundsContext, conn: Conn, batch: Batch) -> None:
    """Record the batch's facts, apply the policy to the returns they touch, then decide people's
    commands: those parked until a return of this batch arrived first, then the batch's own, in order."""
    arriving = [e.return_id for e in batch.of(ReturnRequested)]
    # Before any row lock: an HTTP decision parking for one of these returns finishes first (and is
    # found below) or waits and then sees the return (repository.lock_decisions).
    await repository.lock_decisions(conn, (), [*arriving, *(e.return_id for e in batch.of(RefundCommand))])
    await record_facts(conn, batch)
    await evaluate_returns(ctx, conn, _correlations(batch))
    commands = await repository.parked_commands(conn, arriving)
    commands += await authenticated_commands(ctx, conn, batch.delivered(RefundCommand))
    _log_refusals(commands, await process_commands(ctx, conn, commands))


async def record_facts(conn: Conn, batch: Batch) -> None:
    """Store what happened; a fact may come before its return (applied when the return arrives)."""
    await repository.record_returns(conn, batch.of(ReturnRequested))
    await repository.record_moving_scans(conn, rules.first_moving_scans(batch.of(ParcelScanned)))
    await repository.record_receipts(conn, batch.of(ReturnReceived))
    await repository.record_cancellations(conn, batch.of(ReturnCancelled))
    await repository.record_replacements(conn, batch.of(ReplacementShipped))
    await repository.record_out_of_stock(conn, batch.of(ExchangeOutOfStock))


def _correlations(batch: Batch) -> dict[UUID, str]:
    """Per return touched by a fact, the correlation id of its last one (commands carry their own)."""
    return {e.return_id: e.correlation_id for e in batch.events if not isinstance(e, RefundCommand)}


async def authenticated_commands(
    ctx: RefundsContext, conn: Conn, delivered: Sequence[tuple[RefundCommand, Delivery]]
) -> list[CommandIn]:
    """The batch's commands, each marked with why it does not prove its actor (signed by the key the
    roster holds for `actor_id`, fresh against its Kafka record's timestamp), if it does not."""
    keys = await repository.public_keys(conn, [e.actor_id for e, _ in delivered])
    window = timedelta(seconds=ctx.freshness_s)
    skew = timedelta(seconds=ctx.clock_skew_s)
    return [
        CommandIn(
            str(e.event_id),
            e.return_id,
            "kafka",
            e.actor_id,
            e.action,
            e.amount,
            e.note,
            e.correlation_id,
            unauthenticated=signed_commands.check(
                d.value, keys.get(e.actor_id), e.occurred_at, d.timestamp, window, skew
            ),
            escalation_id=e.escalation_id,
        )
        for e, d in delivered
    ]


def _log_refusals(commands: Sequence[CommandIn], outcomes: Sequence[Outcome]) -> None:
    """Refused commands: a warning each (reason, claimed actor, correlation id) and the refusal counter."""
    for c, o in zip(commands, outcomes, strict=True):
        reason = rules.refusal_reason(c, o)
        if reason is None:
            continue
        metrics.COMMANDS_REFUSED.labels("refunds", reason).inc()
        log.warning(
            "refund command refused",
            command_id=c.command_id,
            source=c.source,
            actor_id=c.actor_id,
            action=c.action,
            status=o.status,
            reason=reason,
            detail=o.message,
            correlation_id=c.correlation_id,
        )


async def evaluate_returns(ctx: RefundsContext, conn: Conn, correlations: dict[UUID, str]) -> int:
    """Run the automatic policy for these returns (those already known) and save what it decides."""
    known = await repository.load_facts(conn, correlations, ctx.settings.clawback_lookback_days)
    planned = [
        Planned(k, actions, correlations.get(rid) or k.correlation_id)
        for rid, k in known.items()
        if (actions := rules.evaluate(k.facts, ctx.policy_for(k.shop_id)))
    ]
    return await save_decisions(conn, planned) if planned else 0


# -- people's commands ----------------------------------------------------------------------------------------


async def decide(ctx: RefundsContext, command: CommandIn) -> Outcome:
    """A person's decision over HTTP, decided and saved in its own transaction."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        (outcome,) = await process_commands(ctx, conn, [command])
    _log_refusals([command], [outcome])
    return outcome


async def process_commands(ctx: RefundsContext, conn: Conn, commands: Sequence[CommandIn]) -> list[Outcome]:
    """Decide each command with the actor's roster role, in order, and record every one (the authority
    log). A command for a return not known yet is parked until the return arrives (HTTP and Kafka)."""
    if not commands:
        return []
    keys = [c.idempotency_key for c in commands if c.idempotency_key]
    await repository.lock_decisions(conn, keys, [c.return_id for c in commands])
    actors = await repository.actors_by_id(conn, [c.actor_id for c in commands])
    known = await repository.load_facts(conn, [c.return_id for c in commands], ctx.settings.clawback_lookback_days)
    # After the key is locked: a retry racing its original sees the original's answer.
    replays = await repository.answered_commands(conn, keys)
    shops = ctx.shop_policies(k.shop_id for k in known.values())
    decided = rules.decide_commands(commands, actors, known, replays, ctx.policy, shops)
    if decided.planned:
        await save_decisions(conn, decided.planned)
    await repository.record_commands(conn, decided.rulings)
    return decided.outcomes


async def save_decisions(conn: Conn, planned: Sequence[Planned]) -> int:
    """Save the decisions, ledger entries, escalations and clawbacks, and their events (one statement
    per table for the whole batch); a cause already decided (by a concurrent writer) takes no effect
    again. Returns the number of events."""
    recorded = await repository.record_decisions(conn, planned)
    effects = rules.taking_effect(planned, recorded)
    await repository.add_refunds(conn, [(p, a) for p, a in effects if isinstance(a, RefundNow)])
    await repository.open_escalations(conn, [(p, a) for p, a in effects if isinstance(a, Escalate)])
    await repository.close_escalations(conn, [a for _, a in effects if isinstance(a, CloseEscalation)])
    await repository.raise_escalations(conn, [a for _, a in effects if isinstance(a, Reescalate)])
    await repository.flag_clawbacks(conn, [(p, a) for p, a in effects if isinstance(a, FlagClawback)])
    out = events.decision_events(effects, datetime.now(UTC))
    await enqueue(conn, out)
    return len(out)


# -- the payment worker ----------------------------------------------------------------------------------


async def payment_worker(ctx: RefundsContext) -> None:
    """Pays the ledger's pending refunds; a new refund row wakes it (NOTIFY), else it polls."""
    step = partial(pay_due_refunds, ctx)
    await Worker("payments", step, ctx.settings.payment_poll_s, ctx.dsn, ctx.payments_channel).run()


async def nothing_to_pay(ctx: RefundsContext) -> bool:
    """The payment worker is idle: no refund due now or being paid (a retry scheduled later is not due)."""
    return not await repository.payments_waiting(ctx.pool)


async def pay_due_refunds(ctx: RefundsContext) -> float | None:
    """One round: lease due refunds, ask the gateway (concurrently), record the outcomes in one
    transaction. Returns 0 after paying (more may be due), else the seconds until the next is due."""
    s = ctx.settings
    due = await repository.claim_due(ctx.pool, s.payment_batch, s.payment_lease_s)
    if not due:
        wait = await repository.next_due_in(ctx.pool)
        return None if wait is None else max(wait, 0.01)  # due now but leased elsewhere: not a busy loop
    traces: Scope = {}  # each payment continues its return's trace; the outcome events carry it
    results = await asyncio.gather(*(pay(ctx, d, traces) for d in due))
    with in_scope(traces):
        async with ctx.pool.acquire() as conn, conn.transaction():
            await record_payments(conn, results)
    return 0


async def pay(ctx: RefundsContext, d: Due, traces: Scope | None = None) -> PaymentResult:
    s = ctx.settings
    attrs = {ATTR_RETURN_ID: str(d.return_id), "returnflow.refund_id": d.refund_id}
    async with ctx.paying:
        with resumed("refund pay", d.correlation_id, attrs, into=traces):
            r = await ctx.gateways.for_shop(d.shop_id).refund(
                d.idempotency_key,
                d.payment_id,
                d.amount,
                d.currency,
                {"return_id": str(d.return_id), "refund_id": d.refund_id, "basis": d.basis},
                d.gateway_reference,
            )
    wait = retry_delay_s(d.attempts, s.payment_retry_base_s, s.payment_retry_max_s)
    return PaymentResult(d, r.ok, r.reference, r.error, r.retryable, wait)


async def record_payments(conn: Conn, results: Sequence[PaymentResult]) -> int:
    """Issued, failed for good (releases the amount), or to be retried; one event each."""
    now = datetime.now(UTC)
    paid = [r for r in results if r.ok]
    refused = [r for r in results if r.failed_for_good]
    unknown = [r for r in results if r.to_retry]
    issued = await repository.mark_issued(conn, paid)
    for row in issued:  # request -> refund paid, by basis (Grafana's refund cycle time panel)
        if row["cycle_s"] is not None:
            metrics.REFUND_CYCLE.labels(row["basis"]).observe(max(0.0, row["cycle_s"]))
    recorded = {row["refund_id"] for row in issued}
    recorded |= await repository.mark_failed(conn, refused)
    recorded |= await repository.schedule_retries(conn, unknown)
    out = events.payment_events([*paid, *refused, *unknown], recorded, now)
    await enqueue(conn, out)
    return len(out)


# -- work items a person closes ------------------------------------------------------------------------------


def _failure_answer(row: Any) -> dict[str, Any]:
    keys = ("refund_id", "action", "note", "resolved_by", "resolved_role", "retry_refund_id", "resolved_at")
    return {k: row[k] for k in keys}


async def resolve_failure(
    ctx: RefundsContext,
    return_id: UUID,
    refund_id: str | None,
    actor: Actor,
    action: str,
    note: str | None,
    correlation_id: str,
) -> tuple[Resolution, dict[str, Any]] | None:
    """A person's resolution of a declined refund of the return (None: unknown return): retried as a new
    ledger entry, settled offline, or closed; once, with its event, in one transaction."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        money = await repository.lock_return(conn, return_id)  # serialises resolutions and retries of the return
        if money is None:
            return None
        failed = await repository.declined_refund(conn, return_id, refund_id)
        headroom = money["paid_total"] - money["reserved"]
        decided = rules.resolve_failure(
            actor,
            failed["amount"] if failed else None,
            failed["action"] if failed else None,
            action,
            headroom,
            refund_id,
        )
        if not decided.takes_effect:
            return decided, _failure_answer(failed) if failed is not None and failed["action"] else {}
        assert failed is not None
        retry_id = rules.refund_id(return_id, f"retry:{failed['refund_id']}") if action == "retry" else None
        if retry_id is not None:
            await repository.retry_refund(conn, failed, retry_id, correlation_id)
        row = await repository.record_failure_resolution(conn, failed, action, note, actor, retry_id, correlation_id)
        news = events.failure_resolved(dict(row), failed["amount"], failed["currency"], datetime.now(UTC))
        await enqueue(conn, [news])
    log.info(
        "declined refund resolved",
        refund_id=failed["refund_id"],
        action=action,
        actor_id=actor.actor_id,
        correlation_id=correlation_id,
    )
    return decided, _failure_answer(row)


def _clawback_answer(row: Any) -> dict[str, Any]:
    keys = ("clawback_id", "return_id", "amount", "currency", "resolution", "resolved_by", "resolved_role")
    return {**{k: row[k] for k in keys}, "note": row["resolution_note"], "resolved_at": row["resolved_at"]}


async def resolve_clawback(
    ctx: RefundsContext, clawback_id: str, actor: Actor, resolution: str, note: str | None, correlation_id: str
) -> tuple[Resolution, dict[str, Any]]:
    """A person closes a clawback (waived, recovered off-platform, written off), once, with its event."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        found = await repository.clawback_for_update(conn, clawback_id)
        decided = rules.resolve_clawback(actor, found is not None, found["resolution"] if found else None, resolution)
        if not decided.takes_effect:
            return decided, _clawback_answer(found) if found is not None and found["resolution"] else {}
        row = await repository.resolve_clawback(conn, clawback_id, resolution, note, actor)
        await enqueue(conn, [events.clawback_resolved(dict(row), correlation_id, datetime.now(UTC))])
    log.info(
        "clawback resolved",
        clawback_id=clawback_id,
        resolution=resolution,
        actor_id=actor.actor_id,
        correlation_id=correlation_id,
    )
    return decided, _clawback_answer(row)


async def settle_from_webhook(ctx: RefundsContext, settled: Sequence[WebhookOutcome]) -> int:
    """Refunds a provider settled asynchronously (paid, or declined for good) are recorded as the payment
    worker records them: only a refund still pending changes, so a repeated or late webhook (or one
    racing the worker) takes no effect twice. Returns the number of refunds recorded."""
    if not settled:
        return 0
    async with ctx.pool.acquire() as conn, conn.transaction():
        pending = await repository.pending_refunds(
            conn, [w.refund_id for w in settled if w.refund_id], [w.reference for w in settled]
        )
        results = rules.webhook_results(pending, settled)
        await record_payments(conn, results)
    for r in results:
        log.info(
            "refund settled by the provider's webhook",
            refund_id=r.due.refund_id,
            outcome="paid" if r.ok else "declined",
            reference=r.reference,
            correlation_id=r.due.correlation_id,
        )
    return len(results)
