"""Pure decisions of the returns service: what status a return has after an event (later steps
outrank earlier ones, so events arriving out of order never move a return backwards), whether a
return can still be cancelled, what a platform's tracking/cancel event does, and which webhooks of
a group commit are new returns and which are duplicates; and for the customer's page, the progress
line, the one next thing to do, whether a link still works and whether a tracking number may be
entered (and how often). No I/O."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import reduce
from typing import Any, Literal, NamedTuple
from uuid import UUID, uuid4

from contracts.events import is_moving
from returnflow.phones import normalize_phone
from returnflow.shops import Shop
from services.returns.schemas import ReturnEventWebhook, ReturnWebhook


class Status(NamedTuple):
    name: str
    rank: int


# -- status: the one state machine ---------------------------------------------------------------------
# A return's status is a fold of its events: each event, read with the return's kind, leads to a status
# or to none, and the highest rank wins. Max is commutative, associative and idempotent, so the events
# may arrive in any order, twice, or interleaved with other returns' and the status is the same
# (property-tested). Every status name has one rank.

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
REFUNDED = STATUS_BY_EVENT["refund.issued"]

# An exchange ends when the replacement reaches the customer, or when a person converts it to a refund.
AWAITING_STOCK = Status("awaiting_stock", 33)  # the warehouse has no replacement: a person decides
CONVERSION_UNDER_REVIEW = Status("conversion_under_review", 38)  # converting needs a higher role
CONVERTED_TO_REFUND = Status("converted_to_refund", 48)  # decided; `refunded` once paid
EXCHANGE_SHIPPED = Status("exchange_shipped", 60)
EXCHANGE_DELIVERED = Status("exchange_delivered", 70)
EXCHANGE_STATUS_BY_EVENT: dict[str, Status] = {
    "exchange.out_of_stock": AWAITING_STOCK,
    "exchange.replacement_shipped": EXCHANGE_SHIPPED,
    "exchange.replacement_delivered": EXCHANGE_DELIVERED,
}
CONVERSION_BASIS = "exchange_conversion"
CANCELLED = STATUS_BY_EVENT["return.cancelled"]


def status_after(event_type: str, data: dict[str, Any], kind: str = "return_and_refund") -> Status | None:
    """The status one event leads to on a return of this kind (None: the event does not move it)."""
    if kind == "exchange":
        return _exchange_status_after(event_type, data)
    if event_type == "refund.decided" and data.get("decision") == "reject":
        return REJECTED
    return STATUS_BY_EVENT.get(event_type)


def _exchange_status_after(event_type: str, data: dict[str, Any]) -> Status | None:
    """On an exchange, refunds move the status only when they convert it: a goodwill grant (or its
    escalation, failure or rejection) is money on the side, the exchange goes on."""
    if event_type in EXCHANGE_STATUS_BY_EVENT:
        return EXCHANGE_STATUS_BY_EVENT[event_type]
    if event_type.startswith("refund."):
        if data.get("basis") != CONVERSION_BASIS:
            return None
        match event_type, data.get("decision"):
            case "refund.escalated", _:
                return CONVERSION_UNDER_REVIEW
            case "refund.decided", "refund":
                return CONVERTED_TO_REFUND
            case "refund.issued", _:
                return REFUNDED
        return None
    return STATUS_BY_EVENT.get(event_type)


def later(a: Status | None, b: Status | None) -> Status | None:
    """The step of the fold: the higher-ranked of two statuses."""
    if a is None:
        return b
    if b is None:
        return a
    return b if b.rank > a.rank else a


def status_of(kind: str, events: Iterable[tuple[str, dict[str, Any]]]) -> Status | None:
    """A return's status from its (event type, data) events, in any order."""
    return reduce(later, (status_after(t, d, kind) for t, d in events), None)


def latest_statuses(events: Iterable[tuple[UUID, str, str, dict[str, Any]]]) -> dict[UUID, Status]:
    """Per return, the status its (return id, kind, event type, data) events lead to."""
    out: dict[UUID, Status] = {}
    for return_id, kind, event_type, data in events:
        status = later(out.get(return_id), status_after(event_type, data, kind))
        if status is not None:
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
    by: str = "customer"  # or "shop": the merchant declined or closed it on their platform


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


# -- Shopify's return topics on a known return ----------------------------------------------------------

SHOPIFY_TOPICS = ("returns/request", "returns/decline", "returns/close")
IN_TRANSIT = STATUS_BY_EVENT["parcel.scanned"]


@dataclass(frozen=True)
class Unchanged:
    """The platform reports what returnflow's own events already carry on: nothing changes (answered 200,
    so the platform does not deliver it again)."""

    status: str


def decide_shopify_topic(topic: str, current: Status, reason: str) -> Cancel | AlreadyCancelled | Unchanged:
    """returns/decline: the shop declined the request, so the return is cancelled by the shop (Shopify only
    declines a requested return; should the goods be back already, nothing changes). returns/close: the
    shop closed it in Shopify; while no parcel was seen that means it gave up on it (cancelled by the
    shop); once a parcel moves, returnflow's own events (receipt, refund) carry it to its end."""
    if current.name == CANCELLED.name:
        return AlreadyCancelled()
    limit = IN_TRANSIT.rank if topic == "returns/close" else STATUS_BY_EVENT["return.received"].rank
    if current.rank >= limit:
        return Unchanged(current.name)
    return Cancel(reason, by="shop")


# -- intake: a group commit of return webhooks -----------------------------------------------------

DEFAULT_LOCALE, DEFAULT_TIMEZONE = "zh-CN", "Asia/Shanghai"


def with_shop_defaults(body: ReturnWebhook, shop: Shop | None) -> ReturnWebhook:
    """What the platform left out, from the shop's settings (shops file): the customer's locale and time
    zone (else zh-CN and Asia/Shanghai) and the shop's display name. What the platform sent is kept."""
    c = body.customer
    customer = c.model_copy(
        update={
            "locale": c.locale or (shop.locale if shop else None) or DEFAULT_LOCALE,
            "timezone": c.timezone or (shop.timezone if shop else None) or DEFAULT_TIMEZONE,
        }
    )
    return body.model_copy(update={"customer": customer, "shop_name": body.shop_name or (shop.name if shop else None)})


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


# -- the customer's page: progress, what to do next, the link, self-service tracking ------------------
# (services/returns/customer.py shows them; each is a pure function of the return and its timeline)


class Fact(NamedTuple):
    """One timeline entry as the page reads it."""

    type: str
    at: datetime
    data: dict[str, Any]


STEP_PLANS: dict[str, tuple[str, ...]] = {
    "refund_only": ("requested", "approved", "refund_paid"),
    "return_and_refund": ("requested", "on_its_way", "received", "checked", "refund_paid"),
    "exchange": ("requested", "on_its_way", "received", "replacement_shipped", "replacement_delivered"),
}
# An exchange a person turned into a refund (out of stock): its money, not a parcel, ends it.
CONVERTED_PLAN: tuple[str, ...] = ("requested", "on_its_way", "received", "refund_instead", "refund_paid")
CLOSED = frozenset({"refunded", "rejected", "cancelled", "exchange_delivered"})


def is_step_event(step: str, f: Fact) -> bool:
    """Which timeline entry completes a step: the one definition the page uses."""
    match step:
        case "requested":
            return f.type == "return.requested"
        case "on_its_way":
            return f.type == "parcel.scanned" and is_moving(str(f.data.get("scan_code", "")))
        case "received":
            return f.type == "return.received"
        case "checked":  # the goods judged: a stock movement verified, or a refund decided on the receipt
            return f.type == "inventory.verified" or (
                f.type == "refund.decided" and f.data.get("basis") == "warehouse_receipt"
            )
        case "approved":
            return f.type == "refund.decided" and f.data.get("decision") == "refund"
        case "refund_paid":
            return f.type == "refund.issued"
        case "replacement_shipped":
            return f.type == "exchange.replacement_shipped"
        case "replacement_delivered":
            return f.type == "exchange.replacement_delivered"
        case "refund_instead":
            return is_conversion(f)
    return False


def is_conversion(f: Fact) -> bool:
    """A person decided to refund an exchange instead of sending its replacement."""
    return f.type == "refund.decided" and f.data.get("decision") == "refund" and f.data.get("basis") == CONVERSION_BASIS


@dataclass(frozen=True)
class Step:
    key: str
    at: datetime | None  # when it happened; None: not yet

    @property
    def done(self) -> bool:
        return self.at is not None


@dataclass(frozen=True)
class Refund:
    amount: int  # minor units
    currency: str
    paid: bool


@dataclass(frozen=True)
class Parcel:
    """An exchange's outgoing parcel: the courier's slug and its tracking number."""

    carrier: str
    tracking_no: str


@dataclass(frozen=True)
class Progress:
    steps: tuple[Step, ...]
    cancelled_at: datetime | None
    rejected_at: datetime | None
    under_review: bool
    refund: Refund | None
    # an exchange's news beside its steps: goods checked, replacement out of stock, made a refund instead
    checked_at: datetime | None = None
    out_of_stock_at: datetime | None = None
    converted_at: datetime | None = None
    replacement: Parcel | None = None  # the outgoing parcel, once the replacement shipped
    released_at: datetime | None = None  # the shop sends the replacement without waiting for the goods

    def done(self, key: str) -> bool:
        return any(s.key == key and s.done for s in self.steps)

    @property
    def closed_at(self) -> datetime | None:
        """When the return ended: cancelled, refund rejected, or its last step done."""
        ends = [t for t in (self.cancelled_at, self.rejected_at) if t is not None]
        if self.steps and all(s.done for s in self.steps):
            ends.append(max(s.at for s in self.steps if s.at is not None))
        return min(ends, default=None)


def _first(facts: Sequence[Fact], match: Callable[[Fact], bool]) -> datetime | None:
    return min((f.at for f in facts if match(f)), default=None)


def step_time(step: str, facts: Sequence[Fact]) -> datetime | None:
    return min((f.at for f in facts if is_step_event(step, f)), default=None)


def progress(kind: str, facts: Sequence[Fact]) -> Progress:
    """The customer's progress line from a return's timeline, in any order the events arrived. On an
    exchange, refunds are goodwill beside it (a declined one stops nothing) unless one converts it."""
    converted_at = _first(facts, is_conversion) if kind == "exchange" else None
    plan = CONVERTED_PLAN if converted_at is not None else STEP_PLANS[kind]
    steps = tuple(Step(key, step_time(key, facts)) for key in plan)
    rejected_at = _first(facts, lambda f: f.type == "refund.decided" and f.data.get("decision") == "reject")
    if kind == "exchange":
        rejected_at = None
    escalated = _first(facts, lambda f: f.type == "refund.escalated")
    decided = _first(facts, lambda f: f.type in ("refund.decided", "refund.issued"))
    return Progress(
        steps=steps,
        cancelled_at=_first(facts, lambda f: f.type == "return.cancelled"),
        rejected_at=rejected_at,
        under_review=escalated is not None and (decided is None or decided < escalated),
        refund=refund_of(facts),
        checked_at=step_time("checked", facts),
        out_of_stock_at=_first(facts, lambda f: f.type == "exchange.out_of_stock"),
        converted_at=converted_at,
        replacement=replacement_parcel(facts) if kind == "exchange" else None,
        released_at=_first(facts, lambda f: f.type == "exchange.replacement_released"),
    )


def replacement_parcel(facts: Sequence[Fact]) -> Parcel | None:
    """The exchange's outgoing parcel from its exchange.replacement_shipped entry (the first one: the
    warehouse ships one replacement per exchange); None before it shipped."""
    shipped = sorted((f for f in facts if f.type == "exchange.replacement_shipped"), key=lambda f: f.at)
    for f in shipped:
        carrier, tracking_no = f.data.get("carrier"), f.data.get("tracking_no")
        if isinstance(carrier, str) and isinstance(tracking_no, str) and carrier and tracking_no:
            return Parcel(carrier, tracking_no)
    return None


def refund_of(facts: Sequence[Fact]) -> Refund | None:
    """What is paid back: the refunds paid, else the latest amount approved or waiting for review."""
    paid = [f for f in facts if f.type == "refund.issued"]
    if paid:
        return Refund(sum(int(f.data.get("amount", 0)) for f in paid), str(paid[0].data.get("currency")), True)
    pending = [
        f
        for f in facts
        if f.type == "refund.escalated" or (f.type == "refund.decided" and f.data.get("decision") == "refund")
    ]
    if not pending:
        return None
    last = max(pending, key=lambda f: f.at)
    return Refund(int(last.data.get("amount", 0)), str(last.data.get("currency")), False)


NextAction = Literal[
    "cancelled",
    "rejected",
    "refund_paid",
    "exchange_checked",
    "exchange_delivered",
    "replacement_on_its_way",
    "replacement_delayed",
    "replacement_released",
    "refund_instead",
    "under_review",
    "nothing_to_send",
    "ship",
    "wait_parcel",
    "checking",
]


def next_action(kind: str, p: Progress) -> NextAction:
    """The one thing the customer should know or do now."""
    if p.cancelled_at is not None:
        return "cancelled"
    if p.rejected_at is not None:
        return "rejected"
    if p.done("refund_paid"):
        return "refund_paid"
    if kind == "exchange" and (exchange_news := _exchange_action(p)) is not None:
        return exchange_news
    if p.under_review:
        return "under_review"
    if kind == "refund_only":
        return "nothing_to_send"
    if p.done("received"):
        return "checking"
    return "wait_parcel" if p.done("on_its_way") else "ship"


def _exchange_action(p: Progress) -> NextAction | None:
    """Where an exchange's replacement is, latest news first (None: nothing beyond a return's)."""
    if p.converted_at is not None:
        return "refund_instead"
    if p.done("replacement_delivered"):
        return "exchange_delivered"
    if p.done("replacement_shipped"):
        return "replacement_on_its_way"
    if p.out_of_stock_at is not None:
        return "replacement_delayed"
    if p.checked_at is not None:
        return "exchange_checked"
    if p.released_at is not None:
        return "replacement_released"
    return None


def can_register_tracking(kind: str, p: Progress, tracking_no: str | None) -> bool:
    """The customer may enter a tracking number while a parcel is expected and none is known."""
    if tracking_no or kind == "refund_only":
        return False
    return next_action(kind, p) == "ship"


LinkState = Literal["valid", "expired", "revoked"]


def link_state(now: datetime, revoked_at: datetime | None, closed_at: datetime | None, ttl: timedelta) -> LinkState:
    """A link works until it is revoked, or until `ttl` after its return closed."""
    if revoked_at is not None and revoked_at <= now:
        return "revoked"
    if closed_at is not None and now >= closed_at + ttl:
        return "expired"
    return "valid"


def retry_after(attempts: Sequence[datetime], now: datetime, limit: int, window: timedelta) -> float | None:
    """Rate limit: None when one more attempt is allowed (fewer than `limit` within `window` before
    now), else the seconds until the oldest attempt in the window leaves it."""
    recent = sorted(a for a in attempts if now - window < a <= now)
    if len(recent) < limit:
        return None
    return max((recent[-limit] + window - now).total_seconds(), 0.001)


# The couriers a customer may pick (slug as the warehouse's carrier scans name them).
COURIERS: tuple[str, ...] = (
    "sf",
    "jd",
    "zto",
    "yto",
    "sto",
    "yunda",
    "ems",
    "ups",
    "fedex",
    "dhl",
    "usps",
    "correos",
    "seur",
    "other",
)
TRACKING_NO = re.compile(r"^[A-Z0-9]{6,40}$")


@dataclass(frozen=True)
class TrackingEntry:
    carrier: str
    tracking_no: str


def parse_tracking(carrier: str, number: str) -> TrackingEntry | dict[str, str]:
    """The customer's courier and tracking number, or per field the error key: spaces and dashes
    a customer types are dropped, letters upper-cased (SF 1234-5678 9012 -> SF123456789012)."""
    errors: dict[str, str] = {}
    if carrier not in COURIERS:
        errors["carrier"] = "carrier_required"
    cleaned = re.sub(r"[\s\-]", "", number).upper()
    if not cleaned:
        errors["tracking_no"] = "tracking_required"
    elif not TRACKING_NO.match(cleaned):
        errors["tracking_no"] = "tracking_invalid"
    return errors or TrackingEntry(carrier, cleaned)


# -- searching returns (the workbench) ------------------------------------------------------------------

RETURN_STATUSES: tuple[str, ...] = (*dict.fromkeys(s.name for s in STATUS_BY_EVENT.values()), REJECTED.name)
SEARCH_FIELDS = ("order_id", "phone", "tracking_number", "status")


@dataclass(frozen=True)
class ReturnSearch:
    """What a person searches returns by (None: not by that); the phone in E.164."""

    order_id: str | None = None
    phone: str | None = None
    tracking_number: str | None = None
    status: str | None = None


def return_search(
    order_id: str | None, phone: str | None, tracking_number: str | None, status: str | None
) -> ReturnSearch | list[dict[str, str]]:
    """The search, or what is wrong with it (field errors): at least one filter; the phone matched exactly
    after normalising it to E.164 ('+86 138-1234-5678' and '13812345678' find '+8613812345678'); values
    trimmed (a scanner's trailing space or newline)."""
    o, p, t = ((v or "").strip() or None for v in (order_id, phone, tracking_number))
    if not (o or p or t or status):
        return [{"field": f, "message": "search by at least one of " + ", ".join(SEARCH_FIELDS)} for f in SEARCH_FIELDS]
    e164 = normalize_phone(p) if p else None
    if p and e164 is None:
        return [{"field": "phone", "message": "not a phone number (E.164, e.g. +8613812345678)"}]
    return ReturnSearch(o, e164, t, status)
