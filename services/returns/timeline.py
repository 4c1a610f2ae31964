"""How each lifecycle event reads on a return's timeline (one line a customer or an agent understands),
and which of its facts the timeline keeps for the reports. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from contracts.events import Message
from services.returns.schemas import ZERO_DECIMAL_CURRENCIES


@dataclass(frozen=True)
class TimelineEntry:
    return_id: UUID
    event_id: str
    occurred_at: datetime
    type: str
    summary: str
    data: dict[str, Any]  # the event's scalar facts (analytics_payload), never contact details


def entry(event: Message) -> TimelineEntry:
    data = event.model_dump(mode="json")
    return TimelineEntry(
        return_id=event.return_id,
        event_id=str(event.event_id),
        occurred_at=event.occurred_at,
        type=event.type,
        summary=summarize(event.type, data),
        data=analytics_payload(data),
    )


def link_revoked(return_id: UUID, at: datetime, actor: str) -> TimelineEntry:
    """A person's revocation of the customer's link, on the return's timeline (no event: nothing else
    acts on it); once per return, as a revocation is."""
    return TimelineEntry(
        return_id,
        f"link-revoked:{return_id}",
        at,
        "link.revoked",
        f"customer link revoked by {actor}",
        {"actor": actor},
    )


_DROP = {"customer", "phone_masked", "lines", "correlation_id", "event_id", "return_id", "type", "version"}


def analytics_payload(data: dict[str, Any]) -> dict[str, Any]:
    """What reports need from an event: its scalar facts, never the customer's contact details."""
    return {k: v for k, v in data.items() if k not in _DROP and not isinstance(v, dict | list)}


def format_money(minor: int, currency: str) -> str:
    if currency in ZERO_DECIMAL_CURRENCIES:
        return f"{currency} {minor}"
    return f"{currency} {minor // 100}.{minor % 100:02d}"


def summarize(event_type: str, d: dict[str, Any]) -> str:
    """One line for the timeline; an event type without its own line reads as its type."""
    line = _SUMMARIES.get(event_type)
    return line(d) if line is not None else event_type


def _money(d: dict[str, Any], key: str = "amount") -> str:
    return format_money(int(d.get(key) or 0), str(d.get("currency") or ""))


def _requested(d: dict[str, Any]) -> str:
    n = sum(int(line.get("qty", 0)) for line in d.get("lines", []))
    return f"Return requested ({d.get('kind')}): {n} item(s), {_money(d, 'paid_total')} paid"


def _cancelled(d: dict[str, Any]) -> str:
    because = f": {d['reason']}" if d.get("reason") else ""
    return f"Return cancelled by {d.get('cancelled_by', 'customer')}{because}"


def _tracking_registered(d: dict[str, Any]) -> str:
    carrier = f" ({d['carrier']})" if d.get("carrier") else ""
    return f"Tracking number {d.get('tracking_no')} registered{carrier}"


def _scanned(d: dict[str, Any]) -> str:
    moving = " — parcel is on its way" if d.get("first_moving") else ""
    where = f" at {d['location']}" if d.get("location") else ""
    return f"Courier scan: {d.get('scan_code')}{where}{moving}"


def _received(d: dict[str, Any]) -> str:
    got = sum(int(line.get("qty_received", 0)) for line in d.get("lines", []))
    return f"Warehouse received {got} item(s) (receipt {d.get('receipt_id')})"


def _refund_decided(d: dict[str, Any]) -> str:
    if d.get("decision") == "reject":
        return "Refund rejected" + (f" by {d['actor_id']}" if d.get("actor_id") else "")
    return f"Refund of {_money(d)} approved ({d.get('basis')})"


def _refund_escalated(d: dict[str, Any]) -> str:
    role = str(d.get("required_role"))
    article = "an" if role[:1] in "aeiou" else "a"
    return f"Refund of {_money(d)} needs {article} {role}'s approval"


_SUMMARIES: dict[str, Callable[[dict[str, Any]], str]] = {
    "return.requested": _requested,
    "return.cancelled": _cancelled,
    "return.tracking_registered": _tracking_registered,
    "parcel.scanned": _scanned,
    "return.received": _received,
    "inventory.attested": lambda d: f"Warehouse attested {d.get('movement')} of {d.get('quantity')} x {d.get('sku')}",
    "inventory.verified": lambda d: (
        f"Stock movement verified: {d.get('movement')} of {d.get('quantity')} x {d.get('sku')}"
    ),
    "inventory.discrepancy": lambda d: f"Inventory discrepancy: {d.get('reason')} — {d.get('details')}",
    "refund.decided": _refund_decided,
    "refund.escalated": _refund_escalated,
    "refund.issued": lambda d: f"Refund of {_money(d)} paid ({d.get('basis')})",
    "refund.failed": lambda d: f"Refund of {_money(d)} failed: {d.get('error')}",
    "refund.clawback_flagged": lambda d: f"Clawback of {_money(d)} flagged for review: {d.get('reason')}",
    "refund.clawback_resolved": lambda d: (
        f"Clawback of {_money(d)} closed ({d.get('resolution')}) by {d.get('resolved_by')}"
    ),
    "refund.failure_resolved": lambda d: f"Declined refund of {_money(d)}: {d.get('action')} by {d.get('resolved_by')}",
    "inventory.discrepancy_resolved": lambda d: (
        f"Inventory discrepancy resolved by {d.get('resolved_by')}: {d.get('note')}"
    ),
    "exchange.replacement_shipped": lambda d: (
        f"Replacement shipped by {d.get('shipped_by')}: {d.get('carrier')} {d.get('tracking_no')}"
    ),
    "exchange.replacement_delivered": lambda d: f"Replacement delivered ({d.get('carrier')} {d.get('tracking_no')})",
    "exchange.replacement_released": lambda _: (
        "Replacement released at the first moving scan: it ships before the goods are back"
    ),
    "exchange.out_of_stock": lambda d: f"Replacement out of stock (reported by {d.get('reported_by')}): for a person",
    "sms.sent": lambda d: f"SMS sent to customer: {d.get('step')}",
    "sms.deferred": lambda d: f"SMS for {d.get('step')} deferred: {d.get('reason')}",
    "sms.suppressed": lambda d: f"SMS for {d.get('step')} not sent: {d.get('reason')}",
    "sms.failed": lambda d: f"SMS for {d.get('step')} failed: {d.get('error')}",
}
