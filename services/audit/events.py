"""Pure mappings at the audit service's edges: the events that bring sides in, and what each decision
writes out — its entry in the hash-chained log and its integration event (`inventory.verified`,
`inventory.discrepancy`); and the anchor of the chain head (`audit.anchored`). No I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from contracts.events import (
    NO_RETURN,
    AuditAnchored,
    DiscrepancyFound,
    DiscrepancyResolved,
    InventoryAttested,
    InventoryCheck,
    Message,
    MovementVerified,
)
from services.audit import chain
from services.audit.rules import AnchorReason, Attached, Discrepancy, Incoming, Outcome, Side, Verified


@dataclass(frozen=True)
class LogEntry:
    """An entry to append to the log (its seq, time and hashes are given when it is appended)."""

    type: str
    return_id: str | None
    sku: str | None
    data: Mapping[str, Any]


@dataclass(frozen=True)
class Appended:
    """Where an entry landed in the chain: an external anchor of it."""

    seq: int
    hash: str


# -- in --------------------------------------------------------------------------------------------
def side_from_attestation(e: InventoryAttested) -> Side:
    return Side(
        source=e.source,
        side_id=e.attestation_id,
        return_id=e.return_id,
        sku=e.sku,
        movement=e.movement,
        quantity=e.quantity,
        person=e.attested_by,
        attested_at=e.attested_at,
        received_at=e.occurred_at,  # replaced by the audit service's clock on ingest
    )


def side_from_check(e: InventoryCheck) -> Side:
    return Side(
        source="returns_team",
        side_id=e.check_id,
        return_id=e.return_id,
        sku=e.sku,
        movement=e.movement,
        quantity=e.quantity,
        person=e.checked_by,
        attested_at=e.checked_at,
        received_at=e.occurred_at,
    )


def from_attestation(e: InventoryAttested) -> Incoming:
    return Incoming(side_from_attestation(e), "kafka", e.correlation_id)


def from_check(e: InventoryCheck) -> Incoming:
    return Incoming(side_from_check(e), "kafka", e.correlation_id)


# -- the log ---------------------------------------------------------------------------------------
def side_entry(i: Incoming) -> LogEntry:
    s = i.side
    data = {
        "source": s.source,
        "id": s.side_id,
        "movement": s.movement.value,
        "quantity": s.quantity,
        "person": s.person,
        "attested_at": chain.timestamp(s.attested_at),
        "via": i.via,
        "note": i.note,
    }
    return LogEntry("side.recorded", str(s.return_id), s.sku, data)


def outcome_entry(o: Outcome) -> LogEntry:
    s0 = o.sides[0]
    rid, sku = str(s0.return_id), s0.sku
    if isinstance(o, Verified):
        data: dict[str, Any] = {
            "movement": o.warehouse.movement.value,
            "quantity": o.warehouse.quantity,
            "warehouse": o.warehouse.key,
            "returns_team": o.returns_team.key,
            "warehouse_person": o.warehouse.person,
            "returns_team_person": o.returns_team.person,
        }
        return LogEntry("movement.verified", rid, sku, data)
    if isinstance(o, Discrepancy):
        data = {
            "discrepancy_id": o.id,
            "reason": o.reason,
            "movement": o.movement.value,
            "sides": [s.key for s in o.sides],
            "details": o.details,
        }
        return LogEntry("discrepancy.opened", rid, sku, data)
    return LogEntry(
        "side.attached", rid, sku, {"side": o.side.key, "discrepancy_id": o.discrepancy_id, "reason": o.reason}
    )


def resolution_entry(found: Mapping[str, Any], person: str, note: str, correlation_id: str) -> LogEntry:
    data = {
        "discrepancy_id": found["id"],
        "reason": found["reason"],
        "resolved_by": person,
        "note": note,
        "correlation_id": correlation_id,
    }
    return LogEntry("discrepancy.resolved", str(found["return_id"]), found["sku"], data)


def discrepancy_resolved(
    resolved: Mapping[str, Any], a: Appended, now: datetime, correlation_id: str
) -> DiscrepancyResolved:
    """A resolved discrepancy (its row) as news: who resolved it and how, anchored to its log entry."""
    return DiscrepancyResolved(
        occurred_at=now,
        return_id=resolved["return_id"],
        correlation_id=correlation_id,
        discrepancy_id=resolved["id"],
        reason=resolved["reason"],
        sku=resolved["sku"],
        resolved_by=resolved["resolved_by"],
        note=resolved["resolution_note"],
        audit_seq=a.seq,
        audit_hash=a.hash,
    )


# -- out -------------------------------------------------------------------------------------------
def correlation_of(o: Outcome, correlation: Mapping[str, str]) -> str:
    """The event follows the correlation id of the side that completed the outcome."""
    last = max(o.sides, key=lambda s: (s.received_at, s.key))
    return correlation.get(last.key) or "audit"


def movement_verified(v: Verified, a: Appended, now: datetime, correlation_id: str) -> MovementVerified:
    w, r = v.warehouse, v.returns_team
    return MovementVerified(
        occurred_at=now,
        return_id=w.return_id,
        correlation_id=correlation_id,
        sku=w.sku,
        movement=w.movement,
        quantity=w.quantity,
        warehouse_attested_by=w.person,
        returns_team_checked_by=r.person,
        warehouse_attestation_id=w.side_id,
        returns_team_check_id=r.side_id,
        audit_seq=a.seq,
        audit_hash=a.hash,
    )


def discrepancy_found(d: Discrepancy, a: Appended, now: datetime, correlation_id: str) -> DiscrepancyFound:
    s0 = d.sides[0]
    return DiscrepancyFound(
        occurred_at=now,
        return_id=s0.return_id,
        correlation_id=correlation_id,
        discrepancy_id=d.id,
        reason=d.reason,
        sku=s0.sku,
        details=d.details,
        movement=d.movement,
        sides=[s.key for s in d.sides],
        audit_seq=a.seq,
        audit_hash=a.hash,
    )


def integration_events(
    outcomes: list[Outcome], appended: list[Appended], now: datetime, correlation: Mapping[str, str]
) -> list[Message]:
    """One event per verified movement and per new discrepancy; a side attached to an open
    discrepancy publishes nothing (the discrepancy was announced when it opened)."""
    out: list[Message] = []
    for o, a in zip(outcomes, appended, strict=True):
        if isinstance(o, Verified):
            out.append(movement_verified(o, a, now, correlation_of(o, correlation)))
        elif isinstance(o, Discrepancy):
            out.append(discrepancy_found(o, a, now, correlation_of(o, correlation)))
        else:
            assert isinstance(o, Attached)
    return out


def chain_anchored(
    head_seq: int, head_hash: str, hashes: list[str], now: datetime, reason: AnchorReason
) -> AuditAnchored:
    """The chain head as published outside PostgreSQL, with the hashes of the entries appended since the
    previous anchor (the last of them is the head's)."""
    return AuditAnchored(
        occurred_at=now,
        return_id=NO_RETURN,
        correlation_id=f"audit-anchor-{head_seq}",
        seq=head_seq,
        hash=head_hash,
        entries=head_seq,  # sequence numbers are gapless from 1 (the log lock numbers them)
        hashes=hashes,
        reason=reason,
    )
