"""Pure decisions of the returns service: what status a return has after an event (later steps
outrank earlier ones, so events arriving out of order never move a return backwards), whether a
return can still be cancelled, what a platform's tracking/cancel event does, and which webhooks of
a group commit are new returns and which are duplicates. No I/O."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple
from uuid import UUID, uuid4

from services.returns.schemas import ReturnEventWebhook, ReturnWebhook


class Status(NamedTuple):
    name: str
    rank: int


# -- status ----------------------------------------------------------------------------------------

STATUS_BY_EVENT: dict[str, Status] = {
    "return.requested": Status("requested", 10),
    "return.tracking_registered": Status("awaiting_parcel", 15),
    "parcel.scanned": Status("in_transit", 20),
    "refund.escalated": Status("under_review", 25),
    "return.received": Status("received", 30),
    "refund.decided": Status("refund_approved", 35),
    "refund.failed": Status("refund_failed", 40),
    "refund.issued": Status("refunded", 50),
    "return.cancelled": Status("cancelled", 90),
}
REJECTED = Status("rejected", 45)
REQUESTED = STATUS_BY_EVENT["return.requested"]


def status_after(event_type: str, data: dict[str, Any]) -> Status | None:
    if event_type == "refund.decided" and data.get("decision") == "reject":
        return REJECTED
    return STATUS_BY_EVENT.get(event_type)


def latest_statuses(events: Iterable[tuple[UUID, str, dict[str, Any]]]) -> dict[UUID, Status]:
    """Per return, the highest-ranked status (return id, event type, data) events lead to."""
    out: dict[UUID, Status] = {}
    for return_id, event_type, data in events:
        status = status_after(event_type, data)
        if status is not None and (return_id not in out or out[return_id].rank < status.rank):
            out[return_id] = status
    return out


def can_cancel(status_rank: int) -> bool:
    return status_rank < STATUS_BY_EVENT["return.received"].rank


# -- a platform's event on a known return ----------------------------------------------------------


@dataclass(frozen=True)
class RegisterTracking:
    tracking_no: str
    carrier: str | None


@dataclass(frozen=True)
class Cancel:
    reason: str | None


@dataclass(frozen=True)
class AlreadyCancelled:
    """Nothing to do: answered as a duplicate."""


@dataclass(frozen=True)
class TooLateToCancel:
    status: str


ReturnEventDecision = RegisterTracking | Cancel | AlreadyCancelled | TooLateToCancel


def decide_return_event(current: Status, body: ReturnEventWebhook) -> ReturnEventDecision:
    """A tracking number is always registered; a cancellation only before the goods were received."""
    if body.type == "tracking_registered":
        assert body.tracking_no is not None  # the body's validator requires it
        return RegisterTracking(body.tracking_no, body.carrier)
    if current.name == "cancelled":
        return AlreadyCancelled()
    if not can_cancel(current.rank):
        return TooLateToCancel(current.name)
    return Cancel(body.reason)


# -- intake: a group commit of return webhooks -----------------------------------------------------


@dataclass(frozen=True)
class Intake:
    source: str
    delivery_id: str
    platform: str
    body: ReturnWebhook
    correlation_id: str

    @property
    def delivery(self) -> tuple[str, str]:
        return (self.source, self.delivery_id)

    @property
    def platform_key(self) -> tuple[str, str]:
        """What names one return on its platform: (shop, platform return id)."""
        return (self.body.shop_id, self.body.platform_return_id)


@dataclass(frozen=True)
class IntakeResult:
    return_id: UUID
    created: bool
    status: str


def new_return_candidates(
    items: Sequence[Intake], known: dict[tuple[str, str], UUID]
) -> dict[tuple[str, str], tuple[UUID, Intake]]:
    """Per platform key, the first webhook not delivered before, with a fresh return id; later
    webhooks naming the same return share its outcome."""
    candidates: dict[tuple[str, str], tuple[UUID, Intake]] = {}
    for it in items:
        if it.delivery not in known and it.platform_key not in candidates:
            candidates[it.platform_key] = (uuid4(), it)
    return candidates


def intake_results(
    items: Sequence[Intake],
    known: dict[tuple[str, str], UUID],
    return_of: dict[tuple[str, str], UUID],
    created: set[UUID],
) -> tuple[list[IntakeResult], list[tuple[str, str, UUID]]]:
    """Each webhook's answer, and the deliveries to remember. A delivery seen before names its
    return; only the first webhook of a new return reports it created."""
    unreported = set(created)
    results: list[IntakeResult] = []
    deliveries: list[tuple[str, str, UUID]] = []
    for it in items:
        rid = known.get(it.delivery)
        is_new = False
        if rid is None:
            rid = return_of[it.platform_key]
            deliveries.append((it.source, it.delivery_id, rid))
            is_new = rid in unreported
            unreported.discard(rid)
        results.append(IntakeResult(rid, is_new, REQUESTED.name))
    return results, deliveries
