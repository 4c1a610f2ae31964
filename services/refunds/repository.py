"""SQL of the refunds service: reads and writes, nothing decided here. Functions taking `conn` run inside
the caller's transaction and handle a whole batch with a fixed number of statements."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any
from uuid import UUID

import asyncpg
import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from contracts.events import (
    Condition,
    ExchangeOutOfStock,
    ParcelScanned,
    RefundBasis,
    ReplacementShipped,
    ReturnCancelled,
    ReturnKind,
    ReturnReceived,
    ReturnRequested,
    Role,
)
from returnflow import commands
from returnflow.db import Conn
from returnflow.http import token_digest
from services.refunds.rules import (
    EARLY_REPLACEMENT,
    PARKED,
    Action,
    Actor,
    Answered,
    CloseEscalation,
    CommandIn,
    Due,
    Escalate,
    FlagClawback,
    Known,
    Line,
    OpenEscalation,
    Outcome,
    Paid,
    PaymentResult,
    Planned,
    Receipt,
    ReceiptLine,
    Reescalate,
    RefundNow,
    Reject,
    ReleaseReplacement,
    ReturnFacts,
    Ruling,
    Wait,
    clawback_id,
    escalation_id,
    refund_id,
)


def _columns(rows: Sequence[tuple[Any, ...]]) -> list[list[Any]]:
    """Rows as columns, one array parameter each (for `unnest`)."""
    return [list(c) for c in zip(*rows, strict=True)]


# -- facts ---------------------------------------------------------------------------------------------


async def record_returns(conn: Conn, events: Sequence[ReturnRequested]) -> None:
    if not events:
        return
    by_id = {e.return_id: e for e in sorted(events, key=lambda e: e.return_id)}
    es = list(by_id.values())
    await conn.execute(
        """INSERT INTO returns (return_id, shop_id, order_id, kind, currency, paid_total, customer_key,
               requested_by_agent, requested_at, lines, correlation_id, payment_reference)
           SELECT r, s, o, k, c, p, ck, a, at, l::jsonb, cid, pr FROM unnest($1::uuid[], $2::text[], $3::text[],
               $4::text[], $5::text[], $6::bigint[], $7::text[], $8::text[], $9::timestamptz[], $10::text[],
               $11::text[], $12::text[]) AS u(r, s, o, k, c, p, ck, a, at, l, cid, pr)
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
        [e.payment_reference for e in es],
    )


async def record_moving_scans(conn: Conn, first: Sequence[ParcelScanned]) -> None:
    """The first moving scan of each return (a fact may come before its return: applied when it arrives)."""
    if not first:
        return
    await conn.execute(
        """INSERT INTO moving_scans (return_id, scan_id, scan_code, scanned_at)
           SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[])
           ON CONFLICT (return_id) DO NOTHING""",
        [s.return_id for s in first],
        [s.scan_id for s in first],
        [s.scan_code.value for s in first],
        [s.scanned_at for s in first],
    )


async def record_receipts(conn: Conn, receipts: Sequence[ReturnReceived]) -> None:
    if not receipts:
        return
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


async def record_cancellations(conn: Conn, cancels: Sequence[ReturnCancelled]) -> None:
    if not cancels:
        return
    await conn.execute(
        """INSERT INTO cancellations (return_id, cancelled_at)
           SELECT * FROM unnest($1::uuid[], $2::timestamptz[]) ON CONFLICT DO NOTHING""",
        [c.return_id for c in cancels],
        [c.occurred_at for c in cancels],
    )


async def record_replacements(conn: Conn, shipped: Sequence[ReplacementShipped]) -> None:
    if not shipped:
        return
    await conn.execute(
        """INSERT INTO replacements_shipped (return_id, shipment_id, shipped_at)
           SELECT * FROM unnest($1::uuid[], $2::text[], $3::timestamptz[]) ON CONFLICT DO NOTHING""",
        [e.return_id for e in shipped],
        [e.shipment_id for e in shipped],
        [e.shipped_at for e in shipped],
    )


async def record_out_of_stock(conn: Conn, reports: Sequence[ExchangeOutOfStock]) -> None:
    if not reports:
        return
    await conn.execute(
        """INSERT INTO out_of_stock (return_id, reported_at)
           SELECT * FROM unnest($1::uuid[], $2::timestamptz[]) ON CONFLICT DO NOTHING""",
        [e.return_id for e in reports],
        [e.occurred_at for e in reports],
    )


# -- loading what is known about returns -------------------------------------------------------------------


async def load_facts(conn: Conn, return_ids: Iterable[UUID], lookback_days: int) -> dict[UUID, Known]:
    """Everything the rules need about these returns, with their rows locked (in id order, so two
    workers never deadlock) until the transaction ends.

    Two statements: the lock, then every fact of the locked returns in one read. (Not one: a statement
    that waits for a row lock reads the other tables as they were when it began, so it would miss a
    refund the lock's holder has just committed. The second statement begins after the locks are held.)"""
    ids = sorted(set(return_ids))
    if not ids:
        return {}
    rows = await conn.fetch(
        "SELECT * FROM returns WHERE return_id = ANY($1::uuid[]) ORDER BY return_id FOR UPDATE", ids
    )
    if not rows:
        return {}
    facts = {
        f["return_id"]: f
        for f in await conn.fetch(_FACTS, [r["return_id"] for r in rows], EARLY_REPLACEMENT, lookback_days)
    }
    out: dict[UUID, Known] = {}
    for r in rows:
        rid = r["return_id"]
        f = facts[rid]
        agent = r["requested_by_agent"]
        facts_of = ReturnFacts(
            return_id=rid,
            kind=ReturnKind(r["kind"]),
            currency=r["currency"],
            paid_total=r["paid_total"],
            lines=tuple(Line(x["sku"], int(x["qty"]), int(x["unit_price"])) for x in r["lines"]),
            requested_at=r["requested_at"],
            requester=Actor(agent, Role(f["requester_role"])) if agent and f["requester_role"] else None,
            cancelled=f["cancelled"],
            replacement_shipped=f["replacement_shipped"],
            replacement_released=f["replacement_released"],
            out_of_stock=f["out_of_stock"],
            first_moving_at=f["first_moving_at"],
            receipts=tuple(
                Receipt(receipt_id, received_at, tuple(_receipt_line(x) for x in lines))
                for (receipt_id, received_at), lines in zip(f["receipt_heads"], f["receipt_lines"], strict=True)
            ),
            refunds=tuple(
                Paid(cause, amount, RefundBasis(basis), actor_id, status == "failed")
                for cause, amount, basis, actor_id, status in f["ledger"]
            ),
            decided=frozenset(f["decided"]),
            escalations=tuple(
                OpenEscalation(escalation_id, cause, amount, RefundBasis(basis), Role(role), requested_by)
                for escalation_id, cause, amount, basis, role, requested_by in f["escalations"]
            ),
            recent_clawbacks=f["recent_clawbacks"],
        )
        out[rid] = Known(facts_of, r["customer_key"], r["correlation_id"], r["order_id"], r["shop_id"])
    return out


def _receipt_line(x: dict[str, Any]) -> ReceiptLine:
    return ReceiptLine(x["sku"], int(x["qty_received"]), Condition(x["condition"]))


# Per return (locked by the caller): its first moving scan, receipts (heads and lines, in the order they came),
# cancellation, the exchange's replacement shipped / released / out of stock, ledger entries, decided causes,
# open escalations, the customer's clawbacks in the lookback window and the filing agent's roster role.
_FACTS = """
SELECT r.return_id,
  (SELECT m.scanned_at FROM moving_scans m WHERE m.return_id = r.return_id) AS first_moving_at,
  ARRAY(SELECT ROW(x.receipt_id, x.received_at) FROM receipts x WHERE x.return_id = r.return_id
        ORDER BY x.received_at, x.receipt_id) AS receipt_heads,
  ARRAY(SELECT x.lines FROM receipts x WHERE x.return_id = r.return_id
        ORDER BY x.received_at, x.receipt_id) AS receipt_lines,
  EXISTS (SELECT 1 FROM cancellations c WHERE c.return_id = r.return_id) AS cancelled,
  EXISTS (SELECT 1 FROM replacements_shipped s WHERE s.return_id = r.return_id) AS replacement_shipped,
  EXISTS (SELECT 1 FROM decisions d WHERE d.return_id = r.return_id AND d.cause = $2 AND d.outcome = 'release')
    AS replacement_released,
  EXISTS (SELECT 1 FROM out_of_stock o WHERE o.return_id = r.return_id) AS out_of_stock,
  ARRAY(SELECT ROW(f.cause, f.amount, f.basis, f.actor_id, f.status) FROM refunds f WHERE f.return_id = r.return_id
        ORDER BY f.created_at, f.refund_id) AS ledger,
  ARRAY(SELECT d.cause FROM decisions d WHERE d.return_id = r.return_id) AS decided,
  ARRAY(SELECT ROW(e.escalation_id, e.cause, e.amount, e.basis, e.required_role, e.requested_by) FROM escalations e
        WHERE e.return_id = r.return_id AND e.status = 'open' ORDER BY e.created_at, e.escalation_id) AS escalations,
  (SELECT count(*) FROM clawbacks k WHERE k.customer_key = r.customer_key
     AND k.flagged_at > now() - make_interval(days => $3))::int AS recent_clawbacks,
  (SELECT a.role FROM roster a WHERE a.actor_id = r.requested_by_agent AND a.active) AS requester_role
FROM returns r WHERE r.return_id = ANY($1::uuid[])
"""


# -- saving decisions ------------------------------------------------------------------------------------


def _decision_row(rid: UUID, a: Action) -> tuple[UUID, str, str, str] | None:
    match a:
        case RefundNow():
            return (rid, a.cause, "refund", a.note or "")
        case Escalate():
            return (rid, a.cause, "escalate", a.reason)
        case Wait():
            return (rid, a.cause, "wait", a.reason)
        case FlagClawback():
            return (rid, a.cause, "clawback", a.reason)
        case Reject():
            return (rid, a.cause, "reject", a.note or "")
        case ReleaseReplacement():
            return (rid, a.cause, "release", a.note)
    return None


async def record_decisions(conn: Conn, planned: Sequence[Planned]) -> set[tuple[UUID, str]]:
    """Record each decided cause once; returns the (return, cause) pairs recorded now (a concurrent
    writer may have recorded the others first)."""
    rows = [row for p in planned for a in p.actions if (row := _decision_row(p.known.facts.return_id, a)) is not None]
    if not rows:
        return set()
    recorded = await conn.fetch(
        """INSERT INTO decisions (return_id, cause, outcome, detail)
           SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[])
           ON CONFLICT DO NOTHING RETURNING return_id, cause""",
        *_columns(rows),
    )
    return {(r["return_id"], r["cause"]) for r in recorded}


async def add_refunds(conn: Conn, effects: Sequence[tuple[Planned, RefundNow]]) -> None:
    """Ledger entries (pending). The trigger adds each amount to its return's `reserved`; the CHECK
    refuses any overshoot."""
    rows = []
    for p, a in effects:
        f = p.known.facts
        ref = refund_id(f.return_id, a.cause)
        actor_id, actor_role = (a.actor.actor_id, a.actor.role.value) if a.actor else (None, None)
        rows.append(
            (
                ref,
                f.return_id,
                a.cause,
                a.amount,
                f.currency,
                a.basis.value,
                actor_id,
                actor_role,
                a.note,
                f"rf-{ref}",
                p.correlation_id,
            )
        )
    if rows:
        await conn.execute(
            """INSERT INTO refunds (refund_id, return_id, cause, amount, currency, basis, actor_id, actor_role,
                   note, idempotency_key, correlation_id)
               SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[], $4::bigint[], $5::text[], $6::text[],
                   $7::text[], $8::text[], $9::text[], $10::text[], $11::text[])""",
            *_columns(rows),
        )


async def open_escalations(conn: Conn, effects: Sequence[tuple[Planned, Escalate]]) -> None:
    rows = [
        (
            escalation_id(f.return_id, a.cause),
            f.return_id,
            a.cause,
            a.amount,
            f.currency,
            a.basis.value,
            a.required_role.value,
            a.requested_by,
            a.reason,
        )
        for p, a in effects
        for f in [p.known.facts]
    ]
    if rows:
        await conn.execute(
            """INSERT INTO escalations (escalation_id, return_id, cause, amount, currency, basis, required_role,
                   requested_by, reason)
               SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[], $4::bigint[], $5::text[], $6::text[],
                   $7::text[], $8::text[], $9::text[]) ON CONFLICT DO NOTHING""",
            *_columns(rows),
        )


async def close_escalations(conn: Conn, closes: Sequence[CloseEscalation]) -> None:
    if closes:
        await conn.execute(
            """UPDATE escalations e SET status = c.status, closed_at = now(), closed_by = c.by
               FROM unnest($1::text[], $2::text[], $3::text[]) AS c(id, status, by)
               WHERE e.escalation_id = c.id AND e.status = 'open'""",
            *_columns([(a.escalation_id, a.status, a.by) for a in closes]),
        )


async def raise_escalations(conn: Conn, raises: Sequence[Reescalate]) -> None:
    if raises:
        await conn.execute(
            """UPDATE escalations e SET required_role = c.role FROM unnest($1::text[], $2::text[]) AS c(id, role)
               WHERE e.escalation_id = c.id AND e.status = 'open'""",
            *_columns([(a.escalation_id, a.required_role.value) for a in raises]),
        )


async def flag_clawbacks(conn: Conn, effects: Sequence[tuple[Planned, FlagClawback]]) -> None:
    rows = []
    for p, a in effects:
        f = p.known.facts
        early = refund_id(f.return_id, "early_scan") if f.early_refunded else None
        rows.append(
            (
                clawback_id(f.return_id, a.cause),
                f.return_id,
                p.known.customer_key,
                a.amount,
                f.currency,
                a.receipt_id,
                early,
                a.reason,
            )
        )
    if rows:
        await conn.execute(
            """INSERT INTO clawbacks (clawback_id, return_id, customer_key, amount, currency, receipt_id, refund_id,
                   reason)
               SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[], $4::bigint[], $5::text[], $6::text[],
                   $7::text[], $8::text[]) ON CONFLICT DO NOTHING""",
            *_columns(rows),
        )


# -- commands ------------------------------------------------------------------------------------------------


async def lock_decisions(conn: Conn, idempotency_keys: Iterable[str], return_ids: Iterable[UUID]) -> None:
    """Transaction-scoped advisory locks, keys first, then returns, each in sorted order (so two
    holders never wait on each other in a circle). A key's lock makes concurrent requests under one
    Idempotency-Key take turns: the later ones see the first one's answer. A return's lock makes a
    command parking for a return not known yet and that return's arrival take turns: the arrival then
    sees the parked command, or the command sees the return — never neither."""
    names = [f"refunds.key:{k}" for k in sorted(set(idempotency_keys))]
    names += [f"refunds.return:{r}" for r in sorted(set(return_ids))]
    if names:
        await conn.execute(
            "SELECT count(pg_advisory_xact_lock(hashtextextended(n, 0))) FROM unnest($1::text[]) AS n", names
        )


async def answered_commands(conn: Conn, idempotency_keys: Sequence[str]) -> dict[str, Answered]:
    """The first command under each of these idempotency keys and its answer (parked: waiting for its
    return; the consumer updates it once the return arrives)."""
    if not idempotency_keys:
        return {}
    rows = await conn.fetch(
        """SELECT command_id, return_id, source, actor_id, action, amount, note, correlation_id, idempotency_key,
               status, http_status, result, message, required_role, answer_amount, answer_field, escalation_id,
               answer_escalation_id
           FROM commands WHERE idempotency_key = ANY($1::text[])""",
        list(idempotency_keys),
    )
    return {
        r["idempotency_key"]: Answered(
            CommandIn(
                r["command_id"],
                r["return_id"],
                r["source"],
                r["actor_id"],
                r["action"],
                r["amount"],
                r["note"],
                r["correlation_id"],
                r["idempotency_key"],
                escalation_id=r["escalation_id"],
            ),
            PARKED
            if r["status"] == "parked"
            else Outcome(
                r["http_status"],
                r["result"],
                r["message"],
                field=r["answer_field"],
                required_role=Role(r["required_role"]) if r["required_role"] else None,
                amount=r["answer_amount"],
                escalation_id=r["answer_escalation_id"],
            ),
        )
        for r in rows
    }


def _command_row(r: Ruling) -> tuple[Any, ...]:
    c, o = r.command, r.outcome
    return (
        c.command_id,
        c.return_id,
        c.source,
        c.actor_id,
        r.actor.role.value if r.actor else None,
        c.action,
        c.amount,
        c.note,
        "parked" if r.parked else "done",
        o.status,
        o.result,
        o.message,
        o.required_role.value if o.required_role else None,
        c.idempotency_key,
        c.correlation_id,
        o.amount,
        o.field,
        c.escalation_id,
        o.escalation_id,
    )


async def record_commands(conn: Conn, rulings: Sequence[Ruling]) -> None:
    """The authority log: every command and its answer; a parked one is updated once it is decided."""
    if not rulings:
        return
    await conn.execute(
        """INSERT INTO commands (command_id, return_id, source, actor_id, actor_role, action, amount, note,
               status, http_status, result, message, required_role, idempotency_key, correlation_id,
               answer_amount, answer_field, escalation_id, answer_escalation_id, decided_at)
           SELECT *, CASE WHEN u.status = 'done' THEN now() END FROM unnest($1::text[], $2::uuid[], $3::text[],
               $4::text[], $5::text[], $6::text[], $7::bigint[], $8::text[], $9::text[], $10::int[], $11::text[],
               $12::text[], $13::text[], $14::text[], $15::text[], $16::bigint[], $17::text[], $18::text[],
               $19::text[])
               AS u(command_id, return_id, source, actor_id, actor_role, action, amount, note, status,
                    http_status, result, message, required_role, idempotency_key, correlation_id,
                    answer_amount, answer_field, escalation_id, answer_escalation_id)
           ON CONFLICT (command_id) DO UPDATE SET status = EXCLUDED.status, actor_role = EXCLUDED.actor_role,
               http_status = EXCLUDED.http_status, result = EXCLUDED.result, message = EXCLUDED.message,
               required_role = EXCLUDED.required_role, answer_amount = EXCLUDED.answer_amount,
               answer_field = EXCLUDED.answer_field, answer_escalation_id = EXCLUDED.answer_escalation_id,
               decided_at = EXCLUDED.decided_at
           WHERE commands.status = 'parked'""",
        *_columns([_command_row(r) for r in rulings]),
    )


async def parked_commands(conn: Conn, return_ids: Sequence[UUID]) -> list[CommandIn]:
    """Commands that came before their return, in the order they came. Without their idempotency key:
    deciding one now is not a retry of its own parked answer."""
    if not return_ids:
        return []
    rows = await conn.fetch(
        """SELECT command_id, return_id, source, actor_id, action, amount, note, correlation_id, escalation_id
           FROM commands WHERE status = 'parked' AND return_id = ANY($1::uuid[]) ORDER BY created_at, command_id""",
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
            escalation_id=r["escalation_id"],
        )
        for r in rows
    ]


# -- roster ------------------------------------------------------------------------------------------------------


class RosterEntry(BaseModel):
    """An actor of the roster as seeded (`returnflow roster seed FILE` reads a JSON list of these)."""

    model_config = ConfigDict(extra="forbid")
    actor_id: str = Field(min_length=1, max_length=128)
    role: Role
    name: str | None = None
    token: str | None = Field(default=None, min_length=16, description="bearer token for the decisions API")
    public_key: str | None = Field(
        default=None, description="Ed25519 public key (base64 of 32 bytes) checking their refunds.commands"
    )
    active: bool = True

    @field_validator("public_key")
    @classmethod
    def _a_public_key(cls, v: str | None) -> str | None:
        if v is not None:
            commands.public_key_from_text(v)  # KeyFormatError is a ValueError: a validation error naming it
        return v


async def actors_by_id(conn: Conn, actor_ids: Sequence[str]) -> dict[str, Actor]:
    if not actor_ids:
        return {}
    rows = await conn.fetch(
        "SELECT actor_id, role FROM roster WHERE actor_id = ANY($1::text[]) AND active", list(set(actor_ids))
    )
    return {r["actor_id"]: Actor(r["actor_id"], Role(r["role"])) for r in rows}


async def public_keys(conn: Conn, actor_ids: Sequence[str]) -> dict[str, str]:
    """The public key of each active actor that has one (checks the signatures of their Kafka commands)."""
    if not actor_ids:
        return {}
    rows = await conn.fetch(
        """SELECT actor_id, public_key FROM roster
           WHERE actor_id = ANY($1::text[]) AND active AND public_key IS NOT NULL""",
        list(set(actor_ids)),
    )
    return {r["actor_id"]: r["public_key"] for r in rows}


async def actor_by_token(conn: Conn | asyncpg.Pool, token: str) -> Actor | None:
    """The active actor holding this bearer token (tokens are kept as SHA-256 digests)."""
    row = await conn.fetchrow(
        "SELECT actor_id, role FROM roster WHERE token_sha256 = $1 AND active", token_digest(token)
    )
    return Actor(row["actor_id"], Role(row["role"])) if row else None


async def seed_roster(conn: Conn, entries: Sequence[RosterEntry]) -> int:
    """Insert or update actors (role, name, token, public key, active). Tokens are stored as SHA-256
    digests; a token or key left out keeps the one on file."""
    if not entries:
        return 0
    await conn.execute(
        """INSERT INTO roster (actor_id, role, display_name, token_sha256, active, public_key)
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::bool[], $6::text[])
           ON CONFLICT (actor_id) DO UPDATE SET role = EXCLUDED.role, display_name = EXCLUDED.display_name,
               token_sha256 = COALESCE(EXCLUDED.token_sha256, roster.token_sha256), active = EXCLUDED.active,
               public_key = COALESCE(EXCLUDED.public_key, roster.public_key), updated_at = now()""",
        [e.actor_id for e in entries],
        [e.role.value for e in entries],
        [e.name for e in entries],
        [token_digest(e.token) if e.token else None for e in entries],
        [e.active for e in entries],
        [e.public_key for e in entries],
    )
    return len(entries)


async def roster(conn: Conn) -> list[dict[str, Any]]:
    """Every actor with role, name, public key and status (never their token)."""
    rows = await conn.fetch(
        "SELECT actor_id, role, display_name, public_key, active FROM roster ORDER BY role, actor_id"
    )
    return [dict(r) for r in rows]


# -- payments ---------------------------------------------------------------------------------------------------


async def claim_due(pool: asyncpg.Pool, limit: int, lease_s: float) -> list[Due]:
    """Lease up to `limit` pending refunds that are due; another worker skips them until the lease ends."""
    rows = await pool.fetch(
        """UPDATE refunds r SET lease_until = now() + make_interval(secs => $2), attempts = r.attempts + 1
           FROM (SELECT refund_id FROM refunds
                 WHERE status = 'pending' AND next_attempt_at <= now() AND (lease_until IS NULL OR lease_until < now())
                 ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) d, returns t
           WHERE r.refund_id = d.refund_id AND t.return_id = r.return_id
           RETURNING r.refund_id, r.return_id, COALESCE(t.payment_reference, t.order_id) AS payment_id, r.amount,
               r.currency, r.basis, r.idempotency_key, r.attempts, r.correlation_id, r.gateway_reference, t.shop_id""",
        limit,
        lease_s,
    )
    return [Due(**dict(r)) for r in rows]


async def pending_refunds(conn: Conn, refund_ids: Sequence[str], references: Sequence[str]) -> list[Due]:
    """The pending refunds with these ids or provider references, locked until the transaction ends (a
    provider's webhook settling them)."""
    rows = await conn.fetch(
        """SELECT r.refund_id, r.return_id, COALESCE(t.payment_reference, t.order_id) AS payment_id, r.amount,
               r.currency, r.basis, r.idempotency_key, r.attempts, r.correlation_id, r.gateway_reference, t.shop_id
           FROM refunds r JOIN returns t ON t.return_id = r.return_id
           WHERE r.status = 'pending' AND (r.refund_id = ANY($1::text[]) OR r.gateway_reference = ANY($2::text[]))
           ORDER BY r.refund_id FOR UPDATE OF r""",
        list(refund_ids),
        list(references),
    )
    return [Due(**dict(r)) for r in rows]


async def payments_waiting(pool: asyncpg.Pool) -> bool:
    """Whether a pending refund is due now or being paid (leased)."""
    return bool(
        await pool.fetchval(
            """SELECT EXISTS (SELECT 1 FROM refunds WHERE status = 'pending'
                   AND (next_attempt_at <= now() OR lease_until > now()))"""
        )
    )


async def next_due_in(pool: asyncpg.Pool) -> float | None:
    """Seconds until the next pending refund is due (0: due now), None when none is pending."""
    v = await pool.fetchval(
        """SELECT EXTRACT(EPOCH FROM min(GREATEST(next_attempt_at, COALESCE(lease_until, next_attempt_at))) - now())
           FROM refunds WHERE status = 'pending'"""
    )
    return None if v is None else max(0.0, float(v))


async def mark_issued(conn: Conn, paid: Sequence[PaymentResult]) -> list[asyncpg.Record]:
    """Paid refunds still pending become issued; returns (refund_id, basis, cycle_s) of each, with
    cycle_s the seconds from the request to now."""
    if not paid:
        return []
    return list(
        await conn.fetch(
            """UPDATE refunds r SET status = 'issued', gateway_reference = u.ref, issued_at = now(),
                   lease_until = NULL, last_error = NULL
               FROM unnest($1::text[], $2::text[]) AS u(id, ref)
               WHERE r.refund_id = u.id AND r.status = 'pending'
               RETURNING r.refund_id, r.basis,
                   EXTRACT(EPOCH FROM now() - (SELECT requested_at FROM returns x WHERE x.return_id = r.return_id))
                       ::float8 AS cycle_s""",
            [r.due.refund_id for r in paid],
            [r.reference for r in paid],
        )
    )


async def mark_failed(conn: Conn, refused: Sequence[PaymentResult]) -> set[str]:
    """Refunds the gateway refused for good (the trigger releases their amount); the ids changed."""
    if not refused:
        return set()
    rows = await conn.fetch(
        """UPDATE refunds r SET status = 'failed', last_error = u.err, lease_until = NULL, failed_at = now()
           FROM unnest($1::text[], $2::text[]) AS u(id, err)
           WHERE r.refund_id = u.id AND r.status = 'pending' RETURNING r.refund_id""",
        [r.due.refund_id for r in refused],
        [r.error for r in refused],
    )
    return {r["refund_id"] for r in rows}


async def schedule_retries(conn: Conn, unknown: Sequence[PaymentResult]) -> set[str]:
    """Refunds whose outcome is unknown are asked again (same key) after their wait; the ids changed."""
    if not unknown:
        return set()
    rows = await conn.fetch(
        """UPDATE refunds r SET next_attempt_at = now() + make_interval(secs => u.wait), lease_until = NULL,
               last_error = u.err, gateway_reference = COALESCE(u.ref, r.gateway_reference)
           FROM unnest($1::text[], $2::float8[], $3::text[], $4::text[]) AS u(id, wait, err, ref)
           WHERE r.refund_id = u.id AND r.status = 'pending' RETURNING r.refund_id""",
        [r.due.refund_id for r in unknown],
        [r.retry_in_s for r in unknown],
        [r.error for r in unknown],
        [r.reference for r in unknown],
    )
    return {r["refund_id"] for r in rows}


# -- work items a person closes -------------------------------------------------------------------------------


async def lock_return(conn: Conn, return_id: UUID) -> asyncpg.Record | None:
    """The return's money row, locked until the transaction ends (a retry adds to its ledger)."""
    return await conn.fetchrow(
        "SELECT return_id, currency, paid_total, reserved FROM returns WHERE return_id = $1 FOR UPDATE", return_id
    )


async def declined_refund(conn: Conn, return_id: UUID, refund_id: str | None) -> asyncpg.Record | None:
    """A declined refund of the return with its resolution, if any: the one named; else the oldest one no
    person resolved yet; else the last one resolved (a repeated request gets that answer again)."""
    return await conn.fetchrow(
        """SELECT f.refund_id, f.return_id, f.cause, f.amount, f.currency, f.basis, f.actor_id, f.actor_role,
               f.note AS refund_note, f.failed_at, x.action, x.note, x.resolved_by, x.resolved_role, x.retry_refund_id,
               x.resolved_at
           FROM refunds f LEFT JOIN failure_resolutions x USING (refund_id)
           WHERE f.return_id = $1 AND f.status = 'failed' AND ($2::text IS NULL OR f.refund_id = $2)
           ORDER BY (x.refund_id IS NOT NULL), CASE WHEN x.refund_id IS NULL THEN f.failed_at END,
               x.resolved_at DESC, f.refund_id
           LIMIT 1""",
        return_id,
        refund_id,
    )


async def retry_refund(conn: Conn, failed: asyncpg.Record, new_refund_id: str, correlation_id: str) -> None:
    """The declined refund paid again as a new ledger entry: same amount, basis and deciding actor (the
    authority used stays theirs); the trigger reserves it and wakes the payment worker."""
    await conn.execute(
        """INSERT INTO refunds (refund_id, return_id, cause, amount, currency, basis, actor_id, actor_role, note,
               idempotency_key, correlation_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)""",
        new_refund_id,
        failed["return_id"],
        f"retry:{failed['refund_id']}",
        failed["amount"],
        failed["currency"],
        failed["basis"],
        failed["actor_id"],
        failed["actor_role"],
        failed["refund_note"],
        f"rf-{new_refund_id}",
        correlation_id,
    )


async def record_failure_resolution(
    conn: Conn,
    failed: asyncpg.Record,
    action: str,
    note: str | None,
    actor: Actor,
    retry_refund_id: str | None,
    correlation_id: str,
) -> asyncpg.Record:
    row = await conn.fetchrow(
        """INSERT INTO failure_resolutions (refund_id, return_id, action, note, resolved_by, resolved_role,
               retry_refund_id, correlation_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *""",
        failed["refund_id"],
        failed["return_id"],
        action,
        note,
        actor.actor_id,
        actor.role.value,
        retry_refund_id,
        correlation_id,
    )
    assert row is not None
    return row


async def clawback_for_update(conn: Conn, clawback_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM clawbacks WHERE clawback_id = $1 FOR UPDATE", clawback_id)


async def resolve_clawback(
    conn: Conn, clawback_id: str, resolution: str, note: str | None, actor: Actor
) -> asyncpg.Record:
    row = await conn.fetchrow(
        """UPDATE clawbacks SET status = 'resolved', resolution = $2, resolution_note = $3, resolved_by = $4,
               resolved_role = $5, resolved_at = now()
           WHERE clawback_id = $1 AND status = 'open' RETURNING *""",
        clawback_id,
        resolution,
        note,
        actor.actor_id,
        actor.role.value,
    )
    assert row is not None
    return row
