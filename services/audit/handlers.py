"""The audit service's steps: each loads the cases it touches, lets `rules.decide` judge them, and
records the outcomes (log entries, rows, integration events) in one transaction under the log lock.

- `apply_inventory`: the consumer of attestations, checks, requested and received returns;
- `submit_check` / `record_checks`: the returns-team checks posted over HTTP (group-committed);
- `sweep_deadlines`: one round of the deadline sweeper (`deadline_sweeper` runs it as a Worker);
- `resolve`: a person resolves a discrepancy;
- `anchor`: the chain head published outside PostgreSQL (audit.anchors through the outbox) at the end
  of each of those transactions that appended entries; `keep_anchors` (the `anchor_keeper` Worker)
  anchors an idle log once per interval and appends every anchor to the anchors file.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from prometheus_client import Counter

from contracts.events import AuditAnchored, InventoryAttested, InventoryCheck, ReturnReceived, ReturnRequested
from returnflow import commands as signed_commands
from returnflow import metrics
from returnflow.batching import GroupCommitter
from returnflow.consumer import Batch, Delivery
from returnflow.db import Conn
from returnflow.http import token_digest
from returnflow.logging import get_logger
from returnflow.loops import Worker
from returnflow.outbox import enqueue
from returnflow.service import Runtime
from services.audit import events, repository, rules
from services.audit.rules import (
    AnchorReason,
    Discrepancy,
    Incoming,
    Outcome,
    Policy,
    Refusal,
    RefusedCheck,
    Verified,
)
from services.audit.settings import AuditSettings

log = get_logger("services.audit")

OUTCOMES = Counter(
    "returnflow_audit_outcomes_total",
    "Dual-check outcomes recorded in the audit log (verified, discrepancy by reason, attached)",
    ["outcome", "reason"],
)


@dataclass(frozen=True)
class CheckResult:
    """What became of a posted check: recorded now (or before), and whether it conflicts with the
    check recorded under the same id; `state` is the side as recorded."""

    created: bool
    conflict: bool
    state: dict[str, Any]


@dataclass
class AuditContext:
    pool: asyncpg.Pool
    settings: AuditSettings
    policy: Policy
    people_by_token: dict[bytes, str]  # sha256 of a returns-team person's bearer token -> the person
    max_body_bytes: int
    checks: GroupCommitter[Incoming, CheckResult]
    dsn: str
    anchor_file: Path | None  # None: no file sink; Path("-"): stdout
    freshness_s: float = 300.0  # a signed check's age against its Kafka record (Settings.command_freshness_s)
    clock_skew_s: float = 30.0


def anchor_file_of(settings: AuditSettings, data_dir: Path) -> Path | None:
    if settings.anchor_file == "off":
        return None
    return Path(settings.anchor_file) if settings.anchor_file else data_dir / "audit" / "anchors.jsonl"


def policy_of(settings: AuditSettings) -> Policy:
    return Policy(
        deadline=timedelta(seconds=settings.check_deadline_s),
        settle=timedelta(seconds=settings.settle_s),
        unknown_grace=timedelta(seconds=settings.unknown_return_grace_s),
        anchor_every=timedelta(seconds=settings.anchor_interval_s),
        anchor_max_hashes=settings.anchor_max_hashes,
    )


async def build_context(rt: Runtime, settings: AuditSettings) -> AuditContext:
    policy = policy_of(settings)
    checks: GroupCommitter[Incoming, CheckResult] = GroupCommitter(
        rt.pool,
        functools.partial(record_checks, policy),
        max_size=settings.checks_batch_max,
        max_wait_s=0.002,
        writers=1,  # every writer takes the log lock anyway
    )
    people = {token_digest(secret.get_secret_value()): person for person, secret in settings.tokens.items()}
    anchor_file = anchor_file_of(settings, rt.settings.data_dir)
    return AuditContext(
        rt.pool,
        settings,
        policy,
        people,
        rt.settings.webhook_max_body_bytes,
        checks,
        rt.dsn,
        anchor_file,
        rt.settings.command_freshness_s,
        rt.settings.command_clock_skew_s,
    )


async def close_context(ctx: AuditContext) -> None:
    await ctx.checks.close()


def _count(outcomes: Sequence[Outcome]) -> None:
    for o in outcomes:
        if isinstance(o, Verified):
            OUTCOMES.labels("verified", "").inc()
        elif isinstance(o, Discrepancy):
            OUTCOMES.labels("discrepancy", o.reason).inc()
        else:
            OUTCOMES.labels("attached", o.reason).inc()


# -- recording sides and settling the cases they touch ---------------------------------------------
async def record_sides(conn: Conn, now: datetime, incoming: Sequence[Incoming]) -> list[Incoming]:
    """Record the sides not recorded yet (the first of each key; a side already recorded under the same
    source and id is ignored), stamped with the audit service's clock. Returns them."""
    by_key: dict[str, Incoming] = {}
    for i in incoming:
        by_key.setdefault(i.side.key, i)
    known = await repository.recorded_keys(conn, list(by_key))
    fresh = [replace(i, side=replace(i.side, received_at=now)) for k, i in by_key.items() if k not in known]
    if fresh:
        appended = await repository.append(conn, now, [events.side_entry(i) for i in fresh])
        await repository.insert_sides(conn, now, fresh, appended)
    return fresh


async def settle(conn: Conn, now: datetime, policy: Policy, keys: Iterable[repository.CaseKey]) -> list[Outcome]:
    """Decide the cases again and record what is new: log entries, rows, integration events."""
    cases, correlation = await repository.load_cases(conn, keys)
    outcomes = [o for c in cases for o in rules.decide(c, now, policy)]
    if outcomes:
        appended = await repository.append(conn, now, [events.outcome_entry(o) for o in outcomes])
        await repository.record_outcomes(conn, now, outcomes, appended)
        await enqueue(conn, events.integration_events(outcomes, appended, now, correlation))
    _count(outcomes)
    return outcomes


async def ingest(
    conn: Conn,
    policy: Policy,
    incoming: Sequence[Incoming],
    returns: Sequence[ReturnRequested] = (),
    receipts: Sequence[ReturnReceived] = (),
) -> list[Outcome]:
    """Record new sides, returns and receipts, and settle every case they touch (a return seen for the
    first time reopens the cases of its waiting sides); anchor the new head. One transaction, one lock."""
    now = await repository.lock_log(conn)
    newly_known = await repository.record_returns(conn, returns)
    await repository.record_receipts(conn, receipts)
    fresh = await record_sides(conn, now, incoming)
    cases = {(i.side.return_id, i.side.sku) for i in fresh} | await repository.open_cases_of(conn, newly_known)
    outcomes = await settle(conn, now, policy, cases)
    await anchor(conn, now, policy, "batch")
    return outcomes


# -- the consumer ----------------------------------------------------------------------------------
async def apply_inventory(ctx: AuditContext, conn: Conn, batch: Batch) -> None:
    """Warehouse attestations and returns-team checks (Kafka), and the returns they belong to. A check
    that does not prove its person is refused and kept with the reason, never recorded as a side."""
    checks, refused = authenticated_checks(ctx, batch.delivered(InventoryCheck))
    await repository.record_refused_checks(conn, refused)
    incoming = [*map(events.from_attestation, batch.of(InventoryAttested)), *map(events.from_check, checks)]
    await ingest(conn, ctx.policy, incoming, batch.of(ReturnRequested), batch.of(ReturnReceived))
    _log_refusals(refused)


def authenticated_checks(
    ctx: AuditContext, delivered: Sequence[tuple[InventoryCheck, Delivery]]
) -> tuple[list[InventoryCheck], list[RefusedCheck]]:
    """The checks signed by the key configured for their `checked_by` and fresh against their Kafka
    record's timestamp; the others, each with the reason."""
    keys = {rules.person_id(p): k for p, k in ctx.settings.public_keys.items()}
    window, skew = timedelta(seconds=ctx.freshness_s), timedelta(seconds=ctx.clock_skew_s)
    accepted: list[InventoryCheck] = []
    refused: list[RefusedCheck] = []
    for e, d in delivered:
        reason = signed_commands.check(
            d.value, keys.get(rules.person_id(e.checked_by)), e.occurred_at, d.timestamp, window, skew
        )
        if reason is None:
            accepted.append(e)
        else:
            refused.append(
                RefusedCheck(e.event_id, e.return_id, e.check_id, e.checked_by, reason, e.correlation_id, d.value)
            )
    return accepted, refused


def _log_refusals(refused: Sequence[RefusedCheck]) -> None:
    for r in refused:
        metrics.COMMANDS_REFUSED.labels("audit", r.reason).inc()
        log.warning(
            "returns-team check refused",
            event_id=str(r.event_id),
            check_id=r.check_id,
            actor_id=r.claimed_by,
            reason=r.reason,
            detail=signed_commands.REFUSAL_TEXT.get(r.reason, r.reason),
            correlation_id=r.correlation_id,
        )


# -- returns-team checks over HTTP (group-committed) -----------------------------------------------
def check_results(
    items: Sequence[Incoming], before: Mapping[str, Any], after: Mapping[str, dict[str, Any]]
) -> list[CheckResult]:
    results: list[CheckResult] = []
    seen: set[str] = set()
    for i in items:
        k = i.side.key
        created = k not in before and k not in seen
        seen.add(k)
        results.append(CheckResult(created, not rules.same_content(after[k], i.side), after[k]))
    return results


async def record_checks(policy: Policy, conn: Conn, items: Sequence[Incoming]) -> list[CheckResult]:
    """One group commit of posted checks."""
    await repository.lock_log(conn)
    keys = [i.side.key for i in items]
    before = await repository.side_states(conn, keys)
    await ingest(conn, policy, items)
    after = await repository.side_states(conn, keys)
    return check_results(items, before, after)


async def submit_check(ctx: AuditContext, check: Incoming) -> CheckResult:
    return await ctx.checks.submit(check)


# -- the deadline sweeper --------------------------------------------------------------------------
async def sweep_deadlines(ctx: AuditContext) -> float | None:
    """Close sides left alone past the deadline (and sides of unknown returns past the grace). Next
    round at once when a full batch was due (more may be), else after the sweep interval."""
    limit = ctx.settings.sweep_batch
    async with ctx.pool.acquire() as conn, conn.transaction():
        now = await repository.lock_log(conn)
        cases = await repository.due_cases(conn, now, ctx.policy, limit)
        outcomes = await settle(conn, now, ctx.policy, cases)
        await anchor(conn, now, ctx.policy, "batch")
    if outcomes:
        log.info("deadline sweep", cases=len(cases), outcomes=len(outcomes))
    return 0 if len(cases) >= limit else None


async def deadline_sweeper(ctx: AuditContext) -> None:
    """Everything the sweeper needs is in PostgreSQL, so a restart loses nothing; several instances
    are safe (each round holds the log lock)."""
    await Worker("audit-deadline-sweeper", lambda: sweep_deadlines(ctx), poll_s=ctx.settings.sweep_interval_s).run()


async def nothing_due(ctx: AuditContext) -> bool:
    """No case is waiting for the sweeper and every anchor is in the anchors file (the service's part of
    the idle barrier)."""
    async with ctx.pool.acquire() as conn:
        now = await repository.database_now(conn)
        if await repository.due_cases(conn, now, ctx.policy, 1):
            return False
        return ctx.anchor_file is None or not await repository.anchors_to_file(conn, 1)


# -- anchors ---------------------------------------------------------------------------------------
async def anchor(conn: Conn, now: datetime, policy: Policy, reason: AnchorReason) -> AuditAnchored | None:
    """Anchor the chain head if `rules.anchor_due` says so: one `audit.anchored` in the outbox (the relay
    publishes it) and its copy for the file sink, in the caller's transaction under the log lock."""
    head_seq, head_hash = await repository.head(conn)
    last = await repository.last_anchor(conn)
    if not rules.anchor_due(reason, head_seq, last, now, policy):
        return None
    hashes = await repository.hashes_after(conn, last.seq if last else 0, policy.anchor_max_hashes)
    event = events.chain_anchored(head_seq, head_hash, hashes, now, reason)
    await repository.record_anchor(conn, head_seq, now, event.model_dump_json())
    await enqueue(conn, [event])
    return event


async def anchor_on_schedule(ctx: AuditContext) -> float:
    """The scheduled anchor of a log nothing was appended to for an interval. Seconds until the next."""
    async with ctx.pool.acquire() as conn:
        last = await repository.last_anchor(conn)
        now = await repository.database_now(conn)
    if rules.anchor_due("schedule", 0, last, now, ctx.policy):
        async with ctx.pool.acquire() as conn, conn.transaction():
            now = await repository.lock_log(conn)
            await anchor(conn, now, ctx.policy, "schedule")
            last = await repository.last_anchor(conn)
    return rules.next_scheduled_anchor_s(last, now, ctx.policy)


def _append_lines(path: Path, lines: Sequence[str]) -> None:
    text = "".join(line + "\n" for line in lines)
    if str(path) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


async def file_anchors(ctx: AuditContext, limit: int = 500) -> int:
    """Append the anchors not in the file yet, then mark them (a crash in between writes a line twice:
    `verify` reads duplicates as one). Returns how many."""
    if ctx.anchor_file is None:
        return 0
    pending = await repository.anchors_to_file(ctx.pool, limit)
    if pending:
        await asyncio.to_thread(_append_lines, ctx.anchor_file, [value for _, value in pending])
        await repository.mark_filed(ctx.pool, [i for i, _ in pending])
    return len(pending)


async def keep_anchors(ctx: AuditContext) -> float | None:
    """One round of the anchor keeper: the scheduled anchor when due, then the file sink."""
    next_s = await anchor_on_schedule(ctx)
    if await file_anchors(ctx) > 0:
        return 0
    return next_s


async def anchor_keeper(ctx: AuditContext) -> None:
    """Woken by the NOTIFY each anchor sends at commit, so the file follows the topic within a round trip."""
    await Worker(
        "audit-anchor-keeper",
        lambda: keep_anchors(ctx),
        poll_s=ctx.settings.anchor_interval_s,
        dsn=ctx.dsn,
        channel=repository.ANCHOR_CHANNEL,
    ).run()


# -- resolution ------------------------------------------------------------------------------------
async def resolve(
    ctx: AuditContext, discrepancy_id: str, person: str, note: str, correlation_id: str
) -> dict[str, Any] | Refusal:
    """The resolved discrepancy (with the hash of its log entry), or why it may not be resolved."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        now = await repository.lock_log(conn)
        found = await repository.discrepancy(conn, discrepancy_id)
        people = await repository.people_of(conn, discrepancy_id) if found is not None else []
        refusal = rules.refuse_resolution(discrepancy_id, found, people, person)
        if refusal is not None:
            return refusal
        assert found is not None
        (a,) = await repository.append(conn, now, [events.resolution_entry(found, person, note, correlation_id)])
        resolved = await repository.mark_resolved(conn, discrepancy_id, now, person, note, a)
        await enqueue(conn, [events.discrepancy_resolved(resolved, a, now, correlation_id)])
        await anchor(conn, now, ctx.policy, "batch")
    return {**resolved, "resolution_hash": a.hash}
