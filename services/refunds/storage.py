"""SQL of the refunds service. Functions taking `conn` run inside the caller's transaction and handle a
whole batch with a fixed number of statements."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any
from uuid import UUID

import asyncpg
import orjson

from contracts.events import (
    MOVING_SCAN_CODES,
    ClawbackFlagged,
    Condition,
    Message,
    ParcelScanned,
    RefundBasis,
    RefundDecided,
    RefundEscalated,
    RefundFailed,
    RefundIssued,
    ReturnCancelled,
    ReturnKind,
    ReturnReceived,
    ReturnRequested,
    Role,
)
from returnflow import metrics
from returnflow.db import Conn
from returnflow.outbox import enqueue
from services.refunds.domain import RosterEntry, token_digest
from services.refunds.policy import (
    Action,
    Actor,
    CloseEscalation,
    Command,
    Escalate,
    FlagClawback,
    Line,
    OpenEscalation,
    Outcome,
    Paid,
    Policy,
    Receipt,
    ReceiptLine,
    Reescalate,
    RefundNow,
    Reject,
    ReturnFacts,
    Wait,
    decide_command,
    escalation_id,
    evaluate,
    fold,
    refund_id,
)

# -- facts ---------------------------------------------------------------------------------------------


async def record_returns(conn: Conn, events: Sequence[ReturnRequested]) -> None:
    if not events:
        return
    by_id = {e.return_id: e for e in sorted(events, key=lambda e: e.return_id)}
    es = list(by_id.values())
    await conn.execute(
        """INSERT INTO returns (return_id, shop_id, order_id, kind, currency, paid_total, customer_key,
               requested_by_agent, requested_at, lines, correlation_id)
           SELECT r, s, o, k, c, p, ck, a, at, l::jsonb, cid FROM unnest($1::uuid[], $2::text[], $3::text[],
               $4::text[], $5::text[], $6::bigint[], $7::text[], $8::text[], $9::timestamptz[], $10::text[],
               $11::text[]) AS u(r, s, o, k, c, p, ck, a, at, l, cid)
           ON CONFLICT (return_id) DO NOTHING""",
        [e.return_id for e in es],
        [e.shop_id for e in es],
        [e.order_id for e in es],
        [e.kind.value for e in es],
        [e.currency for e in es],
        [e.paid_total for e in es],
        [f"{e.shop_id}:{e.customer.id}" for e in es],
        [e.requested_by.agent_id if e.requested_by.type == "agent" else None for e in es],
        [e.requested_at for e in es],
        [
            orjson.dumps([{"sku": x.sku, "qty": x.qty, "unit_price": x.unit_price} for x in e.lines]).decode()
            for e in es
        ],
        [e.correlation_id for e in es],
    )


async def record_facts(
    conn: Conn,
    scans: Sequence[ParcelScanned],
    receipts: Sequence[ReturnReceived],
    cancels: Sequence[ReturnCancelled],
) -> None:
    """Store what happened; a fact may come before its return (applied when the return arrives)."""
    moving = sorted(
        (s for s in scans if s.scan_code in MOVING_SCAN_CODES), key=lambda s: (s.return_id, s.scanned_at, s.scan_id)
    )
    first: dict[UUID, ParcelScanned] = {}
    for s in moving:
        first.setdefault(s.return_id, s)
    if first:
        ss = list(first.values())
        await conn.execute(
            """INSERT INTO moving_scans (return_id, scan_id, scan_code, scanned_at)
               SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[])
               ON CONFLICT (return_id) DO NOTHING""",
            [s.return_id for s in ss],
            [s.scan_id for s in ss],
            [s.scan_code.value for s in ss],
            [s.scanned_at for s in ss],
        )
    if receipts:
        receipts = sorted(receipts, key=lambda r: r.receipt_id)
        await conn.execute(
            """INSERT INTO receipts (receipt_id, return_id, received_at, lines)
               SELECT r, rid, at, l::jsonb FROM unnest($1::text[], $2::uuid[], $3::timestamptz[], $4::text[])
                   AS u(r, rid, at, l)
               ON CONFLICT (receipt_id) DO NOTHING""",
            [r.receipt_id for r in receipts],
            [r.return_id for r in receipts],
            [r.received_at for r in receipts],
            [
                orjson.dumps(
                    [{"sku": x.sku, "qty_received": x.qty_received, "condition": x.condition.value} for x in r.lines]
                ).decode()
                for r in receipts
            ],
        )
    if cancels:
        await conn.execute(
            """INSERT INTO cancellations (return_id, cancelled_at)
               SELECT * FROM unnest($1::uuid[], $2::timestamptz[]) ON CONFLICT DO NOTHING""",
            [c.return_id for c in cancels],
            [c.occurred_at for c in cancels],
        )


@dataclass(frozen=True)
class Known:
    facts: ReturnFacts
    customer_key: str
    correlation_id: str
    order_id: str


async def load_facts(conn: Conn, return_ids: Iterable[UUID], lookback_days: int) -> dict[UUID, Known]:
    """Everything the policy needs about these returns, with their rows locked (in id order, so two
    workers never deadlock) until the transaction ends."""
    ids = sorted(set(return_ids))
    if not ids:
        return {}
    rows = await conn.fetch(
        "SELECT * FROM returns WHERE return_id = ANY($1::uuid[]) ORDER BY return_id FOR UPDATE", ids
    )
    if not rows:
        return {}
    ids = [r["return_id"] for r in rows]
    scans = {
        r["return_id"]: r["scanned_at"]
        for r in await conn.fetch(
            "SELECT return_id, scanned_at FROM moving_scans WHERE return_id = ANY($1::uuid[])", ids
        )
    }
    receipts: dict[UUID, list[Receipt]] = {}
    for r in await conn.fetch(
        """SELECT return_id, receipt_id, received_at, lines FROM receipts WHERE return_id = ANY($1::uuid[])
           ORDER BY received_at, receipt_id""",
        ids,
    ):
        lines = tuple(ReceiptLine(x["sku"], int(x["qty_received"]), Condition(x["condition"])) for x in r["lines"])
        receipts.setdefault(r["return_id"], []).append(Receipt(r["receipt_id"], r["received_at"], lines))
    cancelled = {
        r["return_id"]
        for r in await conn.fetch("SELECT return_id FROM cancellations WHERE return_id = ANY($1::uuid[])", ids)
    }
    paid: dict[UUID, list[Paid]] = {}
    for r in await conn.fetch(
        """SELECT return_id, cause, amount, basis, actor_id, status FROM refunds WHERE return_id = ANY($1::uuid[])
           ORDER BY created_at, refund_id""",
        ids,
    ):
        paid.setdefault(r["return_id"], []).append(
            Paid(r["cause"], r["amount"], RefundBasis(r["basis"]), r["actor_id"], r["status"] == "failed")
        )
    decided: dict[UUID, set[str]] = {}
    for r in await conn.fetch("SELECT return_id, cause FROM decisions WHERE return_id = ANY($1::uuid[])", ids):
        decided.setdefault(r["return_id"], set()).add(r["cause"])
    open_esc: dict[UUID, list[OpenEscalation]] = {}
    for r in await conn.fetch(
        """SELECT escalation_id, return_id, cause, amount, basis, required_role, requested_by FROM escalations
           WHERE return_id = ANY($1::uuid[]) AND status = 'open' ORDER BY created_at, escalation_id""",
        ids,
    ):
        open_esc.setdefault(r["return_id"], []).append(
            OpenEscalation(
                r["escalation_id"],
                r["cause"],
                r["amount"],
                RefundBasis(r["basis"]),
                Role(r["required_role"]),
                r["requested_by"],
            )
        )
    keys = list({r["customer_key"] for r in rows})
    clawbacks = {
        r["customer_key"]: r["n"]
        for r in await conn.fetch(
            """SELECT customer_key, count(*) AS n FROM clawbacks WHERE customer_key = ANY($1::text[])
               AND flagged_at > now() - make_interval(days => $2) GROUP BY customer_key""",
            keys,
            lookback_days,
        )
    }
    agents = await actors_by_id(conn, [r["requested_by_agent"] for r in rows if r["requested_by_agent"]])
    out: dict[UUID, Known] = {}
    for r in rows:
        rid = r["return_id"]
        facts = ReturnFacts(
            return_id=rid,
            kind=ReturnKind(r["kind"]),
            currency=r["currency"],
            paid_total=r["paid_total"],
            lines=tuple(Line(x["sku"], int(x["qty"]), int(x["unit_price"])) for x in r["lines"]),
            requested_at=r["requested_at"],
            requester=agents.get(r["requested_by_agent"]) if r["requested_by_agent"] else None,
            cancelled=rid in cancelled,
            first_moving_at=scans.get(rid),
            receipts=tuple(receipts.get(rid, ())),
            refunds=tuple(paid.get(rid, ())),
            decided=frozenset(decided.get(rid, ())),
            escalations=tuple(open_esc.get(rid, ())),
            recent_clawbacks=clawbacks.get(r["customer_key"], 0),
        )
        out[rid] = Known(facts, r["customer_key"], r["correlation_id"], r["order_id"])
    return out


# -- applying decisions ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Planned:
    known: Known
    actions: Sequence[Action]
    correlation_id: str


def clawback_id(return_id: UUID, cause: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"returnflow:clawback:{return_id}:{cause}"))


async def apply_actions(conn: Conn, planned: Sequence[Planned]) -> int:
    """Write the decisions, ledger entries, escalations and clawbacks, and their events (one
    statement per table for the whole batch). Returns the number of events."""
    now = datetime.now(UTC)
    decisions: list[tuple[UUID, str, str, str]] = []
    for p in planned:
        rid = p.known.facts.return_id
        for a in p.actions:
            match a:
                case RefundNow():
                    decisions.append((rid, a.cause, "refund", a.note or ""))
                case Escalate():
                    decisions.append((rid, a.cause, "escalate", a.reason))
                case Wait():
                    decisions.append((rid, a.cause, "wait", a.reason))
                case FlagClawback():
                    decisions.append((rid, a.cause, "clawback", a.reason))
                case Reject():
                    decisions.append((rid, a.cause, "reject", a.note or ""))
    fresh: set[tuple[UUID, str]] = set()
    if decisions:
        fresh = {
            (r["return_id"], r["cause"])
            for r in await conn.fetch(
                """INSERT INTO decisions (return_id, cause, outcome, detail)
                   SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[])
                   ON CONFLICT DO NOTHING RETURNING return_id, cause""",
                [d[0] for d in decisions],
                [d[1] for d in decisions],
                [d[2] for d in decisions],
                [d[3] for d in decisions],
            )
        }
    refunds: list[tuple[Any, ...]] = []
    escalations: list[tuple[Any, ...]] = []
    closes: list[tuple[str, str, str | None]] = []
    reescalations: list[tuple[str, str]] = []
    clawbacks: list[tuple[Any, ...]] = []
    events: list[Message] = []
    for p in planned:
        f = p.known.facts
        rid, cur, cid = f.return_id, f.currency, p.correlation_id

        escalated = partial(RefundEscalated, occurred_at=now, return_id=rid, correlation_id=cid, currency=cur)

        for a in p.actions:
            if isinstance(a, CloseEscalation):
                closes.append((a.escalation_id, a.status, a.by))
                continue
            if isinstance(a, Reescalate):
                reescalations.append((a.escalation_id, a.required_role.value))
                esc = next((e for e in f.escalations if e.escalation_id == a.escalation_id), None)
                if esc is not None:
                    events.append(
                        escalated(
                            escalation_id=esc.escalation_id,
                            amount=esc.amount,
                            required_role=a.required_role,
                            requested_by=esc.requested_by,
                            reason=a.reason,
                            basis=esc.basis,
                        )
                    )
                continue
            if (rid, a.cause) not in fresh:
                continue  # decided already (a concurrent writer got there first)
            if isinstance(a, RefundNow):
                ref = refund_id(rid, a.cause)
                refunds.append(
                    (
                        ref,
                        rid,
                        a.cause,
                        a.amount,
                        cur,
                        a.basis.value,
                        a.actor.actor_id if a.actor else None,
                        a.actor.role.value if a.actor else None,
                        a.note,
                        f"rf-{ref}",
                        cid,
                    )
                )
                events.append(
                    RefundDecided(
                        occurred_at=now,
                        return_id=rid,
                        correlation_id=cid,
                        decision="refund",
                        amount=a.amount,
                        currency=cur,
                        basis=a.basis,
                        actor_id=a.actor.actor_id if a.actor else None,
                        actor_role=a.actor.role if a.actor else None,
                        note=a.note,
                        refund_id=ref,
                    )
                )
            elif isinstance(a, Escalate):
                eid = escalation_id(rid, a.cause)
                escalations.append(
                    (eid, rid, a.cause, a.amount, cur, a.basis.value, a.required_role.value, a.requested_by, a.reason)
                )
                events.append(
                    escalated(
                        escalation_id=eid,
                        amount=a.amount,
                        required_role=a.required_role,
                        requested_by=a.requested_by,
                        reason=a.reason,
                        basis=a.basis,
                    )
                )
            elif isinstance(a, FlagClawback):
                cb = clawback_id(rid, a.cause)
                early = refund_id(rid, "early_scan") if f.early_refunded else None
                clawbacks.append((cb, rid, p.known.customer_key, a.amount, cur, a.receipt_id, early, a.reason))
                events.append(
                    ClawbackFlagged(
                        occurred_at=now,
                        return_id=rid,
                        correlation_id=cid,
                        amount=a.amount,
                        currency=cur,
                        receipt_id=a.receipt_id,
                        reason=a.reason,
                        clawback_id=cb,
                        refund_id=early,
                    )
                )
            elif isinstance(a, Reject):
                events.append(
                    RefundDecided(
                        occurred_at=now,
                        return_id=rid,
                        correlation_id=cid,
                        decision="reject",
                        amount=a.amount,
                        currency=cur,
                        actor_id=a.actor.actor_id,
                        actor_role=a.actor.role,
                        note=a.note,
                    )
                )
    if refunds:
        # The trigger adds each amount to its return's `reserved`; the CHECK refuses any overshoot.
        await conn.execute(
            """INSERT INTO refunds (refund_id, return_id, cause, amount, currency, basis, actor_id, actor_role,
                   note, idempotency_key, correlation_id)
               SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[], $4::bigint[], $5::text[], $6::text[],
                   $7::text[], $8::text[], $9::text[], $10::text[], $11::text[])""",
            *[list(c) for c in zip(*refunds, strict=True)],
        )
    if escalations:
        await conn.execute(
            """INSERT INTO escalations (escalation_id, return_id, cause, amount, currency, basis, required_role,
                   requested_by, reason)
               SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[], $4::bigint[], $5::text[], $6::text[],
                   $7::text[], $8::text[], $9::text[]) ON CONFLICT DO NOTHING""",
            *[list(c) for c in zip(*escalations, strict=True)],
        )
    if closes:
        await conn.execute(
            """UPDATE escalations e SET status = c.status, closed_at = now(), closed_by = c.by
               FROM unnest($1::text[], $2::text[], $3::text[]) AS c(id, status, by)
               WHERE e.escalation_id = c.id AND e.status = 'open'""",
            *[list(c) for c in zip(*closes, strict=True)],
        )
    if reescalations:
        await conn.execute(
            """UPDATE escalations e SET required_role = c.role FROM unnest($1::text[], $2::text[]) AS c(id, role)
               WHERE e.escalation_id = c.id AND e.status = 'open'""",
            *[list(c) for c in zip(*reescalations, strict=True)],
        )
    if clawbacks:
        await conn.execute(
            """INSERT INTO clawbacks (clawback_id, return_id, customer_key, amount, currency, receipt_id, refund_id,
                   reason)
               SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[], $4::bigint[], $5::text[], $6::text[],
                   $7::text[], $8::text[]) ON CONFLICT DO NOTHING""",
            *[list(c) for c in zip(*clawbacks, strict=True)],
        )
    await enqueue(conn, events)
    return len(events)


async def evaluate_returns(conn: Conn, policy: Policy, lookback_days: int, correlations: dict[UUID, str]) -> int:
    """Run the automatic policy for these returns (those already known) and apply what it decides."""
    known = await load_facts(conn, correlations, lookback_days)
    planned = []
    for rid, k in known.items():
        actions = evaluate(k.facts, policy)
        if actions:
            planned.append(Planned(k, actions, correlations.get(rid) or k.correlation_id))
    return await apply_actions(conn, planned) if planned else 0


# -- commands ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CommandIn:
    command_id: str
    return_id: UUID
    source: str  # http | kafka
    actor_id: str
    action: str
    amount: int | None
    note: str | None
    correlation_id: str
    idempotency_key: str | None = None


async def process_commands(
    conn: Conn, commands: Sequence[CommandIn], policy: Policy, lookback_days: int
) -> list[Outcome]:
    """Decide each command with the actor's roster role, in order; record every one (the authority
    log). A command for a return not known yet is parked (Kafka) or refused with 404 (HTTP)."""
    if not commands:
        return []
    actors = await actors_by_id(conn, [c.actor_id for c in commands])
    known = await load_facts(conn, [c.return_id for c in commands], lookback_days)
    # After the returns are locked: a retry racing its original sees the original's answer.
    replays: dict[str, Outcome] = {}
    keys = [c.idempotency_key for c in commands if c.idempotency_key]
    if keys:
        for r in await conn.fetch(
            """SELECT idempotency_key, http_status, result, message, required_role, amount FROM commands
               WHERE idempotency_key = ANY($1::text[]) AND status = 'done'""",
            keys,
        ):
            replays[r["idempotency_key"]] = Outcome(
                r["http_status"],
                r["result"],
                r["message"],
                required_role=Role(r["required_role"]) if r["required_role"] else None,
                amount=r["amount"],
            )
    facts = {rid: k.facts for rid, k in known.items()}
    outcomes: list[Outcome] = []
    planned: list[Planned] = []
    rows: list[tuple[Any, ...]] = []
    for c in commands:
        if c.idempotency_key and c.idempotency_key in replays:
            outcomes.append(replays[c.idempotency_key])
            continue
        actor = actors.get(c.actor_id)
        f = facts.get(c.return_id)
        if actor is not None and f is None and c.source == "kafka":
            outcome = Outcome(202, "parked", "return not known yet: the command waits for it")
            status = "parked"
        else:
            outcome = decide_command(f, policy, actor, Command(c.command_id, c.action, c.amount, c.note))
            status = "done"
            if f is not None and outcome.actions:
                planned.append(Planned(replace(known[c.return_id], facts=f), outcome.actions, c.correlation_id))
                for a in outcome.actions:
                    f = fold(f, a)
                facts[c.return_id] = f
        outcomes.append(outcome)
        rows.append(
            (
                c.command_id,
                c.return_id,
                c.source,
                c.actor_id,
                actor.role.value if actor else None,
                c.action,
                c.amount,
                c.note,
                status,
                outcome.status,
                outcome.result,
                outcome.message,
                outcome.required_role.value if outcome.required_role else None,
                c.idempotency_key,
                c.correlation_id,
            )
        )
    if planned:
        await apply_actions(conn, planned)
    if rows:
        await conn.execute(
            """INSERT INTO commands (command_id, return_id, source, actor_id, actor_role, action, amount, note,
                   status, http_status, result, message, required_role, idempotency_key, correlation_id,
                   decided_at)
               SELECT *, CASE WHEN u.status = 'done' THEN now() END FROM unnest($1::text[], $2::uuid[], $3::text[],
                   $4::text[], $5::text[], $6::text[], $7::bigint[], $8::text[], $9::text[], $10::int[], $11::text[],
                   $12::text[], $13::text[], $14::text[], $15::text[])
                   AS u(command_id, return_id, source, actor_id, actor_role, action, amount, note, status,
                        http_status, result, message, required_role, idempotency_key, correlation_id)
               ON CONFLICT (command_id) DO UPDATE SET status = EXCLUDED.status, actor_role = EXCLUDED.actor_role,
                   http_status = EXCLUDED.http_status, result = EXCLUDED.result, message = EXCLUDED.message,
                   required_role = EXCLUDED.required_role, decided_at = EXCLUDED.decided_at
               WHERE commands.status = 'parked'""",
            *[list(c) for c in zip(*rows, strict=True)],
        )
    return outcomes


async def parked_commands(conn: Conn, return_ids: Sequence[UUID]) -> list[CommandIn]:
    rows = await conn.fetch(
        """SELECT command_id, return_id, source, actor_id, action, amount, note, correlation_id FROM commands
           WHERE status = 'parked' AND return_id = ANY($1::uuid[]) ORDER BY created_at, command_id""",
        list(return_ids),
    )
    return [
        CommandIn(
            r["command_id"],
            r["return_id"],
            r["source"],
            r["actor_id"],
            r["action"],
            r["amount"],
            r["note"],
            r["correlation_id"],
        )
        for r in rows
    ]


# -- roster ------------------------------------------------------------------------------------------------------


async def actors_by_id(conn: Conn, actor_ids: Sequence[str]) -> dict[str, Actor]:
    if not actor_ids:
        return {}
    rows = await conn.fetch(
        "SELECT actor_id, role FROM roster WHERE actor_id = ANY($1::text[]) AND active", list(set(actor_ids))
    )
    return {r["actor_id"]: Actor(r["actor_id"], Role(r["role"])) for r in rows}


async def actor_by_token(conn: Conn | asyncpg.Pool, token: str) -> Actor | None:
    row = await conn.fetchrow(
        "SELECT actor_id, role FROM roster WHERE token_sha256 = $1 AND active", token_digest(token)
    )
    return Actor(row["actor_id"], Role(row["role"])) if row else None


async def seed_roster(conn: Conn, entries: Sequence[RosterEntry]) -> int:
    """Insert or update actors (role, name, token, active). Tokens are stored as SHA-256 digests."""
    if not entries:
        return 0
    await conn.execute(
        """INSERT INTO roster (actor_id, role, display_name, token_sha256, active)
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::bool[])
           ON CONFLICT (actor_id) DO UPDATE SET role = EXCLUDED.role, display_name = EXCLUDED.display_name,
               token_sha256 = COALESCE(EXCLUDED.token_sha256, roster.token_sha256), active = EXCLUDED.active,
               updated_at = now()""",
        [e.actor_id for e in entries],
        [e.role.value for e in entries],
        [e.name for e in entries],
        [token_digest(e.token) if e.token else None for e in entries],
        [e.active for e in entries],
    )
    return len(entries)


# -- payments ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Due:
    refund_id: str
    return_id: UUID
    order_id: str
    amount: int
    currency: str
    basis: str
    idempotency_key: str
    attempts: int
    correlation_id: str


async def claim_due(pool: asyncpg.Pool, limit: int, lease_s: float) -> list[Due]:
    """Lease up to `limit` pending refunds that are due; another worker skips them until the lease ends."""
    rows = await pool.fetch(
        """UPDATE refunds r SET lease_until = now() + make_interval(secs => $2), attempts = r.attempts + 1
           FROM (SELECT refund_id FROM refunds
                 WHERE status = 'pending' AND next_attempt_at <= now() AND (lease_until IS NULL OR lease_until < now())
                 ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) d, returns t
           WHERE r.refund_id = d.refund_id AND t.return_id = r.return_id
           RETURNING r.refund_id, r.return_id, t.order_id, r.amount, r.currency, r.basis, r.idempotency_key,
               r.attempts, r.correlation_id""",
        limit,
        lease_s,
    )
    return [Due(**dict(r)) for r in rows]


async def next_due_in(pool: asyncpg.Pool) -> float | None:
    v = await pool.fetchval(
        """SELECT EXTRACT(EPOCH FROM min(GREATEST(next_attempt_at, COALESCE(lease_until, next_attempt_at))) - now())
           FROM refunds WHERE status = 'pending'"""
    )
    return None if v is None else max(0.0, float(v))


@dataclass(frozen=True)
class PaymentResult:
    due: Due
    ok: bool
    reference: str | None
    error: str | None
    retryable: bool
    retry_in_s: float = 0.0


async def record_payments(conn: Conn, results: Sequence[PaymentResult]) -> int:
    """Issued, failed for good (releases the amount), or to be retried; one event each."""
    now = datetime.now(UTC)
    events: list[Message] = []
    ok = [r for r in results if r.ok]
    final = [r for r in results if not r.ok and not r.retryable]
    again = [r for r in results if not r.ok and r.retryable]
    if ok:
        rows = await conn.fetch(
            """UPDATE refunds r SET status = 'issued', gateway_reference = u.ref, issued_at = now(),
                   lease_until = NULL, last_error = NULL
               FROM unnest($1::text[], $2::text[]) AS u(id, ref)
               WHERE r.refund_id = u.id AND r.status = 'pending'
               RETURNING r.refund_id, r.basis,
                   EXTRACT(EPOCH FROM now() - (SELECT requested_at FROM returns x WHERE x.return_id = r.return_id))
                       ::float8 AS cycle_s""",
            [r.due.refund_id for r in ok],
            [r.reference for r in ok],
        )
        issued = {row["refund_id"] for row in rows}
        for row in rows:  # request -> refund paid, by basis (Grafana's refund cycle time panel)
            if row["cycle_s"] is not None:
                metrics.REFUND_CYCLE.labels(row["basis"]).observe(max(0.0, row["cycle_s"]))
        for r in ok:
            if r.due.refund_id in issued:
                events.append(
                    RefundIssued(
                        occurred_at=now,
                        return_id=r.due.return_id,
                        correlation_id=r.due.correlation_id,
                        refund_id=r.due.refund_id,
                        amount=r.due.amount,
                        currency=r.due.currency,
                        basis=RefundBasis(r.due.basis),
                        gateway_reference=r.reference or "",
                    )
                )
    if final:
        failed = {
            row["refund_id"]
            for row in await conn.fetch(
                """UPDATE refunds r SET status = 'failed', last_error = u.err, lease_until = NULL
                   FROM unnest($1::text[], $2::text[]) AS u(id, err)
                   WHERE r.refund_id = u.id AND r.status = 'pending' RETURNING r.refund_id""",
                [r.due.refund_id for r in final],
                [r.error for r in final],
            )
        }
        events += [_failed(r, now) for r in final if r.due.refund_id in failed]
    if again:
        pending = {
            row["refund_id"]
            for row in await conn.fetch(
                """UPDATE refunds r SET next_attempt_at = now() + make_interval(secs => u.wait), lease_until = NULL,
                       last_error = u.err
                   FROM unnest($1::text[], $2::float8[], $3::text[]) AS u(id, wait, err)
                   WHERE r.refund_id = u.id AND r.status = 'pending' RETURNING r.refund_id""",
                [r.due.refund_id for r in again],
                [r.retry_in_s for r in again],
                [r.error for r in again],
            )
        }
        events += [_failed(r, now) for r in again if r.due.refund_id in pending]
    await enqueue(conn, events)
    return len(events)


def _failed(r: PaymentResult, now: datetime) -> RefundFailed:
    return RefundFailed(
        occurred_at=now,
        return_id=r.due.return_id,
        correlation_id=r.due.correlation_id,
        refund_id=r.due.refund_id,
        amount=r.due.amount,
        currency=r.due.currency,
        error=(r.error or "unknown error")[:500],
        retryable=r.retryable,
        attempts=r.due.attempts,
    )


# -- reads --------------------------------------------------------------------------------------------------------


async def ledger_of(conn: Conn | asyncpg.Pool, return_id: UUID) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        "SELECT return_id, kind, currency, paid_total, reserved FROM returns WHERE return_id = $1", return_id
    )
    if row is None:
        return None
    out = dict(row)
    out["refunds"] = [
        dict(r)
        for r in await conn.fetch(
            """SELECT refund_id, cause, amount, basis, status, actor_id, actor_role, attempts, gateway_reference,
                   last_error, created_at, issued_at FROM refunds WHERE return_id = $1 ORDER BY created_at""",
            return_id,
        )
    ]
    out["escalations"] = [
        dict(r)
        for r in await conn.fetch(
            """SELECT escalation_id, amount, basis, required_role, requested_by, reason, status, closed_by,
                   created_at FROM escalations WHERE return_id = $1 ORDER BY created_at""",
            return_id,
        )
    ]
    out["decisions"] = [
        dict(r)
        for r in await conn.fetch(
            "SELECT cause, outcome, detail, decided_at FROM decisions WHERE return_id = $1 ORDER BY decided_at",
            return_id,
        )
    ]
    out["clawbacks"] = await clawback_list(conn, return_id=return_id)
    return out


async def escalation_list(conn: Conn | asyncpg.Pool, role: str | None, limit: int) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """SELECT escalation_id, return_id, amount, currency, basis, required_role, requested_by, reason, created_at
           FROM escalations WHERE status = 'open' AND ($1::text IS NULL OR required_role = $1)
           ORDER BY created_at LIMIT $2""",
        role,
        limit,
    )
    return [dict(r) for r in rows]


async def clawback_list(
    conn: Conn | asyncpg.Pool, return_id: UUID | None = None, customer_key: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """SELECT clawback_id, return_id, customer_key, amount, currency, receipt_id, refund_id, reason, status,
               flagged_at FROM clawbacks
           WHERE ($1::uuid IS NULL OR return_id = $1) AND ($2::text IS NULL OR customer_key = $2)
           ORDER BY flagged_at DESC LIMIT $3""",
        return_id,
        customer_key,
        limit,
    )
    return [dict(r) for r in rows]
