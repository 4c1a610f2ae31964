"""Pure: the refunds service's decisions and payment outcomes as integration events (contracts models).
The one place where a decision becomes RefundDecided / RefundEscalated / ClawbackFlagged / ReplacementReleased,
and a payment RefundIssued / RefundFailed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from contracts.events import (
    ClawbackFlagged,
    ClawbackResolved,
    Message,
    RefundBasis,
    RefundDecided,
    RefundEscalated,
    RefundFailed,
    RefundFailureResolved,
    RefundIssued,
    ReplacementReleased,
    Role,
)
from services.refunds.rules import (
    Action,
    Escalate,
    FlagClawback,
    PaymentResult,
    Planned,
    Reescalate,
    RefundNow,
    Reject,
    ReleaseReplacement,
    clawback_id,
    escalation_id,
    refund_id,
)


def decision_events(effects: Sequence[tuple[Planned, Action]], now: datetime) -> list[Message]:
    """One event per action that took effect and is news to others (waits and closes are not)."""
    return [e for p, a in effects if (e := decision_event(p, a, now)) is not None]


def decision_event(p: Planned, a: Action, now: datetime) -> Message | None:
    match a:
        case RefundNow():
            return refund_decided(p, a, now)
        case Escalate():
            return refund_escalated(p, a, now)
        case Reescalate():
            return refund_reescalated(p, a, now)
        case FlagClawback():
            return clawback_flagged(p, a, now)
        case Reject():
            return refund_rejected(p, a, now)
        case ReleaseReplacement():
            return replacement_released(p, a, now)
    return None


def replacement_released(p: Planned, a: ReleaseReplacement, now: datetime) -> ReplacementReleased:
    return ReplacementReleased(
        occurred_at=now, return_id=p.known.facts.return_id, correlation_id=p.correlation_id, note=a.note
    )


def refund_decided(p: Planned, a: RefundNow, now: datetime) -> RefundDecided:
    f = p.known.facts
    return RefundDecided(
        occurred_at=now,
        return_id=f.return_id,
        correlation_id=p.correlation_id,
        decision="refund",
        amount=a.amount,
        currency=f.currency,
        basis=a.basis,
        actor_id=a.actor.actor_id if a.actor else None,
        actor_role=a.actor.role if a.actor else None,
        note=a.note,
        refund_id=refund_id(f.return_id, a.cause),
    )


def refund_rejected(p: Planned, a: Reject, now: datetime) -> RefundDecided:
    f = p.known.facts
    return RefundDecided(
        occurred_at=now,
        return_id=f.return_id,
        correlation_id=p.correlation_id,
        decision="reject",
        amount=a.amount,
        currency=f.currency,
        actor_id=a.actor.actor_id,
        actor_role=a.actor.role,
        note=a.note,
    )


def refund_escalated(p: Planned, a: Escalate, now: datetime) -> RefundEscalated:
    f = p.known.facts
    return RefundEscalated(
        occurred_at=now,
        return_id=f.return_id,
        correlation_id=p.correlation_id,
        currency=f.currency,
        escalation_id=escalation_id(f.return_id, a.cause),
        amount=a.amount,
        required_role=a.required_role,
        requested_by=a.requested_by,
        reason=a.reason,
        basis=a.basis,
    )


def refund_reescalated(p: Planned, a: Reescalate, now: datetime) -> RefundEscalated | None:
    """An open escalation now waits for a higher role: announced again, naming that role."""
    f = p.known.facts
    esc = next((e for e in f.escalations if e.escalation_id == a.escalation_id), None)
    if esc is None:
        return None
    return RefundEscalated(
        occurred_at=now,
        return_id=f.return_id,
        correlation_id=p.correlation_id,
        currency=f.currency,
        escalation_id=esc.escalation_id,
        amount=esc.amount,
        required_role=a.required_role,
        requested_by=esc.requested_by,
        reason=a.reason,
        basis=esc.basis,
    )


def clawback_flagged(p: Planned, a: FlagClawback, now: datetime) -> ClawbackFlagged:
    f = p.known.facts
    return ClawbackFlagged(
        occurred_at=now,
        return_id=f.return_id,
        correlation_id=p.correlation_id,
        amount=a.amount,
        currency=f.currency,
        receipt_id=a.receipt_id,
        reason=a.reason,
        clawback_id=clawback_id(f.return_id, a.cause),
        refund_id=refund_id(f.return_id, "early_scan") if f.early_refunded else None,
    )


def payment_events(results: Sequence[PaymentResult], recorded: set[str], now: datetime) -> list[Message]:
    """One event per payment outcome that was recorded: issued, or failed (for good, or to be retried)."""
    return [refund_issued(r, now) if r.ok else refund_failed(r, now) for r in results if r.due.refund_id in recorded]


def refund_issued(r: PaymentResult, now: datetime) -> RefundIssued:
    return RefundIssued(
        occurred_at=now,
        return_id=r.due.return_id,
        correlation_id=r.due.correlation_id,
        refund_id=r.due.refund_id,
        amount=r.due.amount,
        currency=r.due.currency,
        basis=RefundBasis(r.due.basis),
        gateway_reference=r.reference or "",
    )


def refund_failed(r: PaymentResult, now: datetime) -> RefundFailed:
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


def failure_resolved(resolved: Mapping[str, Any], amount: int, currency: str, now: datetime) -> RefundFailureResolved:
    """A declined refund's resolution (a row of failure_resolutions) as news."""
    return RefundFailureResolved(
        occurred_at=now,
        return_id=resolved["return_id"],
        correlation_id=resolved["correlation_id"],
        refund_id=resolved["refund_id"],
        action=resolved["action"],
        amount=amount,
        currency=currency,
        resolved_by=resolved["resolved_by"],
        resolved_role=Role(resolved["resolved_role"]),
        note=resolved["note"],
        retry_refund_id=resolved["retry_refund_id"],
    )


def clawback_resolved(c: Mapping[str, Any], correlation_id: str, now: datetime) -> ClawbackResolved:
    """A clawback's resolution (its row, resolved) as news."""
    return ClawbackResolved(
        occurred_at=now,
        return_id=c["return_id"],
        correlation_id=correlation_id,
        clawback_id=c["clawback_id"],
        resolution=c["resolution"],
        amount=c["amount"],
        currency=c["currency"],
        resolved_by=c["resolved_by"],
        resolved_role=Role(c["resolved_role"]),
        note=c["resolution_note"],
    )
