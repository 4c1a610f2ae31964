"""The refunds rules: pure decisions, no I/O (the service's handlers load, call these, and save).

From what is known about a return (its lines and paid total, the first moving scan, the warehouse
receipt, the refunds and escalations so far, the customer's recent clawbacks), the configured
policy and — for a person's command — the actor with their roster role, decide: refund now (how
much, on which basis), escalate (to which role), flag a clawback, or note why nothing moves yet.

Where to look: `evaluate` (what happens to a return without anyone's command: `_refund_only_request`,
`_early_refund` — "when is an early refund allowed?" is its guard chain — and `_receipt`; for an exchange,
`_early_replacement` — "when does the replacement ship before the goods arrive?" — and its checks),
`decide_command` (a person's approve / reject / grant_free_refund) and `decide_commands` (a batch of
commands in order, parked when their return is not known yet).

Invariants (property-tested in tests/unit/test_refunds_policy.py):
- the refunds of a return never add up to more than its paid total;
- nothing is refunded on an actor's say beyond their role's cumulative limit for the return;
- no early refund before a scan that shows the parcel moving;
- receipt refunds never pay for units that were not received;
- an exchange's replacement is released early at most once, never when the shop's policy does not ship
  at the first scan or above the early-refund cap, and a clawback on an exchange only follows a release.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from uuid import UUID

from contracts.events import Condition, ParcelScanned, RefundBasis, ReturnKind, Role, first_moving_scan
from returnflow.commands import REFUSAL_TEXT
from returnflow.shops import Shop
from services.refunds.settings import RefundsSettings

ROLE_ORDER: tuple[Role, ...] = (Role.agent, Role.supervisor, Role.manager, Role.owner)
GOODS_BASES = frozenset({RefundBasis.early_scan, RefundBasis.warehouse_receipt})
_NS = uuid.UUID("6f1c2a4e-2d0b-4d8e-9a55-0d6c1b7e9f31")


# -- configuration ------------------------------------------------------------------------------------

Limits = Mapping[Role, int | None]  # role -> cumulative limit per return in minor units; None = unlimited

PRESETS: dict[str, dict[str, dict[Role, int | None]]] = {
    # agent 20.00, supervisor 50.00, manager 100.00, owner unlimited (CNY)
    "tiered": {"CNY": {Role.agent: 2_000, Role.supervisor: 5_000, Role.manager: 10_000, Role.owner: None}},
    # front-line agents may grant a full free refund of any amount
    "full_trust": {"*": {Role.agent: None, Role.supervisor: None, Role.manager: None, Role.owner: None}},
}


@dataclass(frozen=True)
class Authority:
    """Cumulative limits per return, per currency ("*" = any currency). A currency without limits
    gives no authority but the owner's. The owner is unlimited in every configuration."""

    limits: Mapping[str, Limits]

    def limit(self, role: Role, currency: str) -> int | None:
        if role == Role.owner:
            return None
        table = self.limits.get(currency, self.limits.get("*", {}))
        return table.get(role, 0)

    def covers(self, role: Role, currency: str, cumulative: int) -> bool:
        lim = self.limit(role, currency)
        return lim is None or cumulative <= lim

    def required_role(self, currency: str, cumulative: int) -> Role:
        """The lowest role whose limit covers the cumulative amount."""
        for role in ROLE_ORDER:
            if self.covers(role, currency, cumulative):
                return role
        return Role.owner  # unreachable: the owner is unlimited


def authority_from(preset: str, custom: Mapping[str, Mapping[str, int | None]] | None = None) -> Authority:
    if preset == "custom":
        if not custom:
            raise ValueError(
                "authority preset 'custom' needs RETURNFLOW_REFUNDS_AUTHORITY_LIMITS (currency -> role -> limit)"
            )
        table: dict[str, dict[Role, int | None]] = {}
        for currency, roles in custom.items():
            table[currency] = {}
            for role, lim in roles.items():
                if lim is not None and lim < 0:
                    raise ValueError(f"authority limit of {role} in {currency} must be >= 0 or null")
                table[currency][Role(role)] = lim
        return Authority(table)
    if preset not in PRESETS:
        raise ValueError(f"unknown authority preset {preset!r} (tiered, full_trust or custom)")
    return Authority(PRESETS[preset])


@dataclass(frozen=True)
class Policy:
    authority: Authority
    early_refund: bool = True
    early_refund_cap: Mapping[str, int] = field(default_factory=lambda: {"CNY": 50_000})
    early_refund_max_clawbacks: int = 0
    return_window: timedelta | None = None
    # An exchange's replacement ships at the parcel's first moving scan (under the early refund's cap,
    # clawback gate and return window) instead of after the goods are received.
    replacement_at_first_scan: bool = False


def policy_from(settings: RefundsSettings) -> Policy:
    """The policy the settings configure; a bad authority configuration fails here, in one line."""
    window = settings.return_window_days
    return Policy(
        authority=authority_from(settings.authority_preset, settings.authority_limits),
        early_refund=settings.early_refund,
        early_refund_cap=dict(settings.early_refund_cap),
        early_refund_max_clawbacks=settings.early_refund_max_clawbacks,
        return_window=timedelta(days=window) if window is not None else None,
        replacement_at_first_scan=settings.exchange_ship_at_first_scan,
    )


def shop_policy(default: Policy, shop_settings: Shop | None) -> Policy:
    """A shop's policy: the shops file's keys for it over the environment's policy (`default`); a key the
    shop leaves out keeps the default. A bad custom authority table fails here, in one line."""
    if shop_settings is None:
        return default
    shop = shop_settings.refunds
    p = default
    if (ship := shop_settings.exchanges.ship_at_first_scan) is not None:
        p = replace(p, replacement_at_first_scan=ship)
    if shop.authority is not None:
        p = replace(p, authority=authority_from(shop.authority.preset, shop.authority.limits))
    if (e := shop.early_refund) is not None:
        p = replace(
            p,
            early_refund=p.early_refund if e.enabled is None else e.enabled,
            early_refund_cap=p.early_refund_cap if e.cap is None else dict(e.cap),
            early_refund_max_clawbacks=p.early_refund_max_clawbacks if e.max_clawbacks is None else e.max_clawbacks,
        )
    if shop.return_window_days is not None:
        p = replace(p, return_window=timedelta(days=shop.return_window_days))
    return p


# -- what is known about a return ---------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    sku: str
    qty: int
    unit_price: int


@dataclass(frozen=True)
class ReceiptLine:
    sku: str
    qty_received: int
    condition: Condition


@dataclass(frozen=True)
class Receipt:
    receipt_id: str
    received_at: datetime
    lines: tuple[ReceiptLine, ...]


@dataclass(frozen=True)
class Paid:
    """A ledger entry (pending or issued; failed ones are kept but count for nothing)."""

    cause: str
    amount: int
    basis: RefundBasis
    actor_id: str | None = None
    failed: bool = False


@dataclass(frozen=True)
class OpenEscalation:
    escalation_id: str
    cause: str
    amount: int
    basis: RefundBasis
    required_role: Role
    requested_by: str | None = None


@dataclass(frozen=True)
class Actor:
    actor_id: str
    role: Role


@dataclass(frozen=True)
class ReturnFacts:
    return_id: UUID
    kind: ReturnKind
    currency: str
    paid_total: int
    lines: tuple[Line, ...]
    requested_at: datetime
    requester: Actor | None = None  # the agent who filed it, with the roster's role
    cancelled: bool = False
    replacement_shipped: bool = False  # an exchange's replacement left the warehouse
    replacement_released: bool = False  # an exchange's replacement was released at the first moving scan
    out_of_stock: bool = False  # the warehouse has no replacement for the exchange
    first_moving_at: datetime | None = None
    receipts: tuple[Receipt, ...] = ()
    refunds: tuple[Paid, ...] = ()
    decided: frozenset[str] = frozenset()
    escalations: tuple[OpenEscalation, ...] = ()
    recent_clawbacks: int = 0

    @property
    def reserved(self) -> int:
        return sum(p.amount for p in self.refunds if not p.failed)

    @property
    def headroom(self) -> int:
        return max(0, self.paid_total - self.reserved)

    @property
    def goods_refunded(self) -> int:
        return sum(p.amount for p in self.refunds if not p.failed and p.basis in GOODS_BASES)

    @property
    def early_refunded(self) -> int:
        return sum(p.amount for p in self.refunds if not p.failed and p.basis == RefundBasis.early_scan)

    @property
    def authority_used(self) -> int:
        """What actors have refunded on this return so far: their limits are cumulative."""
        return sum(p.amount for p in self.refunds if not p.failed and p.actor_id is not None)

    @property
    def goods_value(self) -> int:
        return min(sum(x.qty * x.unit_price for x in self.lines), self.paid_total)


# -- decisions ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RefundNow:
    cause: str
    amount: int
    basis: RefundBasis
    actor: Actor | None = None
    note: str | None = None
    escalation_id: str | None = None


@dataclass(frozen=True)
class Escalate:
    cause: str
    amount: int
    basis: RefundBasis
    required_role: Role
    reason: str
    requested_by: str | None = None


@dataclass(frozen=True)
class Reescalate:
    """An open escalation now needs a higher role (more was refunded on the return meanwhile)."""

    escalation_id: str
    required_role: Role
    reason: str


@dataclass(frozen=True)
class Wait:
    """Recorded: nothing is paid for this cause now, and why."""

    cause: str
    reason: str


@dataclass(frozen=True)
class ReleaseReplacement:
    """An exchange's replacement may ship before its goods arrive (the parcel was seen moving): news for
    the warehouse (exchange.replacement_released), once per return."""

    cause: str
    note: str


@dataclass(frozen=True)
class FlagClawback:
    cause: str
    amount: int
    receipt_id: str
    reason: str


@dataclass(frozen=True)
class Reject:
    cause: str
    escalation_id: str
    amount: int
    actor: Actor
    note: str | None = None


@dataclass(frozen=True)
class CloseEscalation:
    escalation_id: str
    status: str  # approved | rejected | superseded | cancelled
    by: str | None = None


Action = RefundNow | Escalate | Reescalate | Wait | FlagClawback | Reject | CloseEscalation | ReleaseReplacement


def refund_id(return_id: UUID, cause: str) -> str:
    """The same cause on the same return is always the same refund (and idempotency key)."""
    return str(uuid.uuid5(_NS, f"refund|{return_id}|{cause}"))


def escalation_id(return_id: UUID, cause: str) -> str:
    return str(uuid.uuid5(_NS, f"escalation|{return_id}|{cause}"))


def clawback_id(return_id: UUID, cause: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"returnflow:clawback:{return_id}:{cause}"))


def first_moving_scans(scans: Iterable[ParcelScanned]) -> list[ParcelScanned]:
    """Per return, the earliest scan that shows the parcel moving (what an early refund waits for)."""
    by_return: dict[UUID, list[ParcelScanned]] = {}
    for s in scans:
        by_return.setdefault(s.return_id, []).append(s)
    firsts = (first_moving_scan(group) for group in by_return.values())
    return [s for s in firsts if s is not None]


def fold(f: ReturnFacts, action: Action) -> ReturnFacts:
    """The facts after an action took effect."""
    match action:
        case RefundNow():
            paid = Paid(action.cause, action.amount, action.basis, action.actor.actor_id if action.actor else None)
            return replace(f, refunds=(*f.refunds, paid), decided=f.decided | {action.cause})
        case Escalate():
            esc = OpenEscalation(
                escalation_id(f.return_id, action.cause),
                action.cause,
                action.amount,
                action.basis,
                action.required_role,
                action.requested_by,
            )
            return replace(f, escalations=(*f.escalations, esc), decided=f.decided | {action.cause})
        case Reescalate():
            return replace(
                f,
                escalations=tuple(
                    replace(e, required_role=action.required_role) if e.escalation_id == action.escalation_id else e
                    for e in f.escalations
                ),
            )
        case Wait() | FlagClawback():
            return replace(f, decided=f.decided | {action.cause})
        case ReleaseReplacement():
            return replace(f, replacement_released=True, decided=f.decided | {action.cause})
        case Reject():
            return replace(f, decided=f.decided | {action.cause})
        case CloseEscalation():
            return replace(f, escalations=tuple(e for e in f.escalations if e.escalation_id != action.escalation_id))
    raise TypeError(action)


class _Plan:
    """Decisions taken one after another, each seeing the effect of the previous ones."""

    def __init__(self, facts: ReturnFacts) -> None:
        self.facts = facts
        self.actions: list[Action] = []

    def add(self, action: Action) -> None:
        self.actions.append(action)
        self.facts = fold(self.facts, action)


# -- valuing what came back ------------------------------------------------------------------------------


def value_of_units(lines: Sequence[Line], units: Mapping[str, int]) -> int:
    """The value of `units` per SKU, capped at what was requested; a SKU listed at several prices is
    valued from its cheapest units up (so a partial receipt never pays for the dearer units)."""
    total = 0
    for sku, n in units.items():
        prices = sorted(p for x in lines if x.sku == sku for p in [x.unit_price] * x.qty)
        total += sum(prices[: max(0, n)])
    return total


def _units(receipt: Receipt, conditions: Iterable[Condition]) -> dict[str, int]:
    wanted = set(conditions)
    out: dict[str, int] = {}
    for line in receipt.lines:
        if line.condition in wanted:
            out[line.sku] = out.get(line.sku, 0) + max(0, line.qty_received)
    return out


def _requested(lines: Sequence[Line]) -> dict[str, int]:
    out: dict[str, int] = {}
    for x in lines:
        out[x.sku] = out.get(x.sku, 0) + x.qty
    return out


def _shortfall_text(lines: Sequence[Line], receipt: Receipt) -> str:
    requested = _requested(lines)
    ok = _units(receipt, [Condition.as_described])
    parts = []
    for sku, qty in requested.items():
        got = min(ok.get(sku, 0), qty)
        if got < qty:
            bad = sorted({x.condition.value for x in receipt.lines if x.sku == sku and x.condition != "as_described"})
            parts.append(f"{sku}: {got} of {qty} as described" + (f" ({', '.join(bad)})" if bad else ""))
    return "; ".join(parts)


def _late(f: ReturnFacts, p: Policy, shipped_at: datetime | None) -> bool:
    return p.return_window is not None and shipped_at is not None and shipped_at - f.requested_at > p.return_window


# -- automatic decisions -----------------------------------------------------------------------------------


def evaluate(f: ReturnFacts, p: Policy) -> list[Action]:
    """What happens to a return now, without anyone's command. Deterministic and idempotent: a cause
    already decided is never decided again."""
    plan = _Plan(f)
    if f.cancelled:
        _cancelled(plan)
    elif f.kind == ReturnKind.refund_only:
        _refund_only_request(plan, p)
    elif f.kind == ReturnKind.return_and_refund:
        _early_refund(plan, p)
        for r in f.receipts:
            _receipt(plan, p, r)
    elif f.kind == ReturnKind.exchange:
        _early_replacement(plan, p)
        for r in f.receipts:
            _check_early_replacement(plan, r)
        _replacement_out_of_stock(plan, p)
    return plan.actions


def _cancelled(plan: _Plan) -> None:
    """A cancelled return closes its escalations; after an early refund, or a replacement released early
    that left the warehouse, the goods will not come back."""
    f = plan.facts
    if f.replacement_released:
        _cancelled_after_release(plan)
    if f.early_refunded > 0 and not f.receipts and "clawback:cancelled" not in f.decided:
        plan.add(
            FlagClawback(
                "clawback:cancelled",
                f.early_refunded,
                "",
                "return cancelled after an early refund: the goods will not come back",
            )
        )
    for e in f.escalations:
        plan.add(CloseEscalation(e.escalation_id, "cancelled"))


def _refund_only_request(plan: _Plan, p: Policy) -> None:
    f = plan.facts
    if "request" in f.decided:
        return
    amount = min(f.goods_value, f.headroom)
    if amount <= 0:
        plan.add(Wait("request", "nothing left to refund"))
        return
    cumulative = f.authority_used + amount
    who = f.requester
    if who is not None and p.authority.covers(who.role, f.currency, cumulative):
        plan.add(RefundNow("request", amount, RefundBasis.refund_only, who, "refund-only request filed by an agent"))
        return
    required = p.authority.required_role(f.currency, cumulative)
    reason = (
        f"refund-only request filed by {who.actor_id} ({who.role.value}) is above their authority"
        if who is not None
        else "refund-only request: a person decides"
    )
    plan.add(
        Escalate(
            "request", amount, RefundBasis.refund_only, required, reason, requested_by=who.actor_id if who else None
        )
    )


def _replacement_out_of_stock(plan: _Plan, p: Policy) -> None:
    """An exchange the warehouse cannot send waits in the people's queue: approving converts it to a refund
    of its goods (within the approver's authority), rejecting waits for stock. Once the replacement ships
    after all, the question is gone."""
    f = plan.facts
    if f.replacement_shipped:
        for e in f.escalations:
            if e.basis == RefundBasis.exchange_conversion:
                plan.add(CloseEscalation(e.escalation_id, "superseded"))
        return
    if not f.out_of_stock or "out_of_stock" in f.decided or _converting(f):
        return
    amount = min(f.goods_value, f.headroom)
    if amount <= 0:
        plan.add(Wait("out_of_stock", "nothing left to refund"))
        return
    required = p.authority.required_role(f.currency, f.authority_used + amount)
    reason = "replacement out of stock: approve to refund instead, reject to wait for stock"
    plan.add(Escalate("out_of_stock", amount, RefundBasis.exchange_conversion, required, reason))


def _converting(f: ReturnFacts) -> bool:
    """A conversion to a refund was paid, is being paid, or waits for a person."""
    bases = [x.basis for x in f.refunds if not x.failed] + [e.basis for e in f.escalations]
    return RefundBasis.exchange_conversion in bases


EARLY_REPLACEMENT = "early_replacement"  # the cause: decided once per return (released, or why it waits)


def _early_replacement(plan: _Plan, p: Policy) -> None:
    """An exchange's replacement released at the first moving scan, under the early refund's gates (goods
    value within its cap, the customer's recent clawbacks, the return window); else it ships at receipt."""
    f = plan.facts
    cause = EARLY_REPLACEMENT
    if f.first_moving_at is None or cause in f.decided or f.receipts or f.replacement_shipped:
        return
    value = f.goods_value
    cap = p.early_refund_cap.get(f.currency)
    if not p.replacement_at_first_scan:
        plan.add(Wait(cause, "the shop ships replacements after receipt: ship at receipt"))
    elif f.out_of_stock:
        plan.add(Wait(cause, "replacement out of stock: ship at receipt"))
    elif _converting(f):
        plan.add(Wait(cause, "the exchange is being converted to a refund: nothing ships"))
    elif cap is None or value > cap:
        plan.add(Wait(cause, f"{value} {f.currency} is above the early-refund cap: ship at receipt"))
    elif f.recent_clawbacks > p.early_refund_max_clawbacks:
        plan.add(Wait(cause, f"customer has {f.recent_clawbacks} recent clawback(s): ship at receipt"))
    elif _late(f, p, f.first_moving_at):
        plan.add(Wait(cause, "parcel shipped after the return window: ship at receipt"))
    else:
        plan.add(ReleaseReplacement(cause, "parcel seen moving by the carrier: the replacement may ship"))


def _check_early_replacement(plan: _Plan, r: Receipt) -> None:
    """After a replacement was released early, what did not come back as described is a clawback of its
    value for a person to follow up (never an automatic charge)."""
    f = plan.facts
    if not f.replacement_released or f"receipt:{r.receipt_id}" in f.decided:
        return
    shortfall = max(0, f.goods_value - value_of_units(f.lines, _units(r, [Condition.as_described])))
    if shortfall > 0:
        plan.add(
            FlagClawback(
                f"clawback:{r.receipt_id}",
                shortfall,
                r.receipt_id,
                f"after the replacement was released early the warehouse found: {_shortfall_text(f.lines, r)}",
            )
        )
    plan.add(Wait(f"receipt:{r.receipt_id}", "replacement released early; receipt checked against it"))


def _cancelled_after_release(plan: _Plan) -> None:
    """A cancelled exchange whose early-released replacement left the warehouse: its goods' value is a
    clawback, unless they came back (a receipt, checked as above). A replacement not shipped yet never
    will be (the warehouse refuses a cancelled exchange): nothing to claw back."""
    f = plan.facts
    for r in f.receipts:
        _check_early_replacement(plan, r)
    if f.receipts or not f.replacement_shipped or "clawback:cancelled" in plan.facts.decided or f.goods_value <= 0:
        return
    plan.add(
        FlagClawback(
            "clawback:cancelled",
            f.goods_value,
            "",
            "exchange cancelled after its replacement was released early and shipped: the goods will not come back",
        )
    )


def _early_refund(plan: _Plan, p: Policy) -> None:
    f = plan.facts
    if f.first_moving_at is None or "early_scan" in f.decided or f.receipts:
        return
    value = f.goods_value
    cap = p.early_refund_cap.get(f.currency)
    amount = min(max(0, value - f.goods_refunded), f.headroom)
    if not p.early_refund:
        plan.add(Wait("early_scan", "early refund is off: refund at receipt"))
    elif cap is None or value > cap:
        plan.add(Wait("early_scan", f"{value} {f.currency} is above the early-refund cap: refund at receipt"))
    elif f.recent_clawbacks > p.early_refund_max_clawbacks:
        plan.add(Wait("early_scan", f"customer has {f.recent_clawbacks} recent clawback(s): refund at receipt"))
    elif _late(f, p, f.first_moving_at):
        plan.add(Wait("early_scan", "parcel shipped after the return window: a person decides at receipt"))
    elif amount <= 0:
        plan.add(Wait("early_scan", "nothing left to refund"))
    else:
        plan.add(RefundNow("early_scan", amount, RefundBasis.early_scan, note="parcel seen moving by the carrier"))


RECEIVED = (Condition.as_described, Condition.damaged, Condition.wrong_item)  # came back, as described or not


def _receipt(plan: _Plan, p: Policy, r: Receipt) -> None:
    """A warehouse receipt: checked against an early refund, or refunded for the units received as
    described (a late parcel goes to a person; damaged or wrong items are reviewed by one)."""
    f = plan.facts
    if f"receipt:{r.receipt_id}" in f.decided:
        return
    ok_value = value_of_units(f.lines, _units(r, [Condition.as_described]))
    flagged_value = max(0, value_of_units(f.lines, _units(r, RECEIVED)) - ok_value)
    if f.early_refunded > 0:
        _check_early_refund(plan, r, ok_value)
    elif _late(f, p, f.first_moving_at or r.received_at):
        _late_receipt(plan, p, r, ok_value, flagged_value)
    else:
        _refund_received(plan, r, ok_value)
        _review_flagged(plan, p, r, flagged_value)


def _due_at_receipt(f: ReturnFacts, ok_value: int) -> int:
    return min(max(0, ok_value - f.goods_refunded), f.headroom)


def _check_early_refund(plan: _Plan, r: Receipt, ok_value: int) -> None:
    """After an early refund a receipt pays nothing more; what did not come back as described is a
    clawback for a person to follow up (never an automatic charge)."""
    f = plan.facts
    shortfall = max(0, f.early_refunded - ok_value)
    if shortfall > 0:
        plan.add(
            FlagClawback(
                f"clawback:{r.receipt_id}",
                shortfall,
                r.receipt_id,
                f"after an early refund the warehouse found: {_shortfall_text(f.lines, r)}",
            )
        )
    plan.add(Wait(f"receipt:{r.receipt_id}", "already refunded early; receipt checked against it"))


def _late_receipt(plan: _Plan, p: Policy, r: Receipt, ok_value: int, flagged_value: int) -> None:
    """Shipped after the return window: a person decides about everything received."""
    f = plan.facts
    cause = f"receipt:{r.receipt_id}"
    amount = min(_due_at_receipt(f, ok_value) + flagged_value, f.headroom)
    if amount <= 0:
        plan.add(Wait(cause, "nothing received"))
        return
    required = p.authority.required_role(f.currency, f.authority_used + amount)
    plan.add(
        Escalate(
            cause,
            amount,
            RefundBasis.warehouse_receipt,
            required,
            "parcel shipped after the return window: a person decides (never an automatic rejection)",
        )
    )


def _refund_received(plan: _Plan, r: Receipt, ok_value: int) -> None:
    cause = f"receipt:{r.receipt_id}"
    due = _due_at_receipt(plan.facts, ok_value)
    if due > 0:
        plan.add(RefundNow(cause, due, RefundBasis.warehouse_receipt, note="for the quantity received as described"))
    else:
        plan.add(Wait(cause, "nothing received as described"))


def _review_flagged(plan: _Plan, p: Policy, r: Receipt, flagged_value: int) -> None:
    """Damaged or wrong items that came back: a person decides whether they are refunded too."""
    f = plan.facts
    review = min(flagged_value, f.headroom)
    if review > 0 and f"review:{r.receipt_id}" not in f.decided:
        required = p.authority.required_role(f.currency, f.authority_used + review)
        plan.add(
            Escalate(
                f"review:{r.receipt_id}",
                review,
                RefundBasis.warehouse_receipt,
                required,
                f"received damaged or wrong item: {_shortfall_text(f.lines, r)}; a person decides",
            )
        )


# -- a person's command ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    command_id: str
    action: str  # approve | reject | grant_free_refund | convert_to_refund
    amount: int | None = None
    note: str | None = None
    escalation_id: str | None = None  # approve / reject this one (else: see `choose_escalation`)


@dataclass(frozen=True)
class Outcome:
    status: int  # HTTP-like: 200 took effect, 202 escalated, 4xx refused
    result: str  # refunded | escalated | rejected | refused
    message: str
    actions: tuple[Action, ...] = ()
    field: str | None = None
    required_role: Role | None = None
    amount: int | None = None
    escalation_id: str | None = None  # the escalation an approve / reject acted on


def _refused(status: int, message: str, fld: str | None = None) -> Outcome:
    return Outcome(status, "refused", message, field=fld)


def decide_command(f: ReturnFacts | None, p: Policy, actor: Actor | None, cmd: Command) -> Outcome:
    """What an actor's approve / reject / grant_free_refund does. The actor's role is the roster's."""
    if actor is None:
        return _refused(401, "unknown actor")
    if f is None:
        return _refused(404, "unknown return")
    if f.cancelled:
        return _refused(409, "the return was cancelled")
    if cmd.action == "grant_free_refund":
        return _grant(f, p, actor, cmd)
    if cmd.action == "convert_to_refund":
        return _convert(f, p, actor, cmd)
    if cmd.action in ("approve", "reject"):
        esc = choose_escalation(f, p, actor, cmd)
        if isinstance(esc, Outcome):
            return esc
        decided = _approve(f, p, actor, cmd, esc) if cmd.action == "approve" else _reject(f, p, actor, cmd, esc)
        return replace(decided, escalation_id=esc.escalation_id)
    return _refused(422, f"unknown action {cmd.action!r}", "action")


def _rank(role: Role) -> int:
    return ROLE_ORDER.index(role)


def may_decide(f: ReturnFacts, p: Policy, actor: Actor, cmd: Command, esc: OpenEscalation) -> bool:
    """Whether the actor's authority covers deciding this escalation now: a reject the escalated amount,
    an approve what it would pay (the amount asked, at most what remains refundable), cumulatively."""
    if cmd.action == "reject":
        amount = esc.amount
    else:
        amount = min(cmd.amount if cmd.amount is not None else esc.amount, f.headroom)
    return p.authority.covers(actor.role, f.currency, f.authority_used + amount)


def choose_escalation(f: ReturnFacts, p: Policy, actor: Actor, cmd: Command) -> OpenEscalation | Outcome:
    """Which open escalation an approve / reject decides.

    - named (`escalation_id`): that one if it is open on this return (else 409 naming `escalation_id`),
      and only by a role at least the one it waits for (else 403);
    - not named: the oldest one the actor's authority covers (a supervisor approves an agent's 30.00 even
      when an older automatic 100.00 waits for a manager); when none is covered, the oldest one, as before
      (an approve of it answers who it waits for, a reject is refused);
    - none open: 409.
    """
    if cmd.escalation_id is not None:
        esc = next((e for e in f.escalations if e.escalation_id == cmd.escalation_id), None)
        if esc is None:
            return _refused(409, f"escalation {cmd.escalation_id!r} is not open on this return", "escalation_id")
        if _rank(actor.role) < _rank(esc.required_role):
            return _refused(
                403,
                f"a {actor.role.value} cannot decide an escalation that waits for a {esc.required_role.value}",
                "escalation_id",
            )
        return esc
    if not f.escalations:
        return _refused(409, "no refund of this return waits for a decision")
    return next((e for e in f.escalations if may_decide(f, p, actor, cmd, e)), f.escalations[0])


def _grant(f: ReturnFacts, p: Policy, actor: Actor, cmd: Command) -> Outcome:
    if cmd.amount is None or cmd.amount <= 0:
        return _refused(422, "a positive amount in minor units is required", "amount")
    if cmd.amount > f.headroom:
        return _refused(422, f"amount exceeds what remains refundable ({f.headroom} {f.currency})", "amount")
    basis = RefundBasis.refund_only if f.kind == ReturnKind.refund_only else RefundBasis.agent_authority
    return _authorised(f, p, actor, cmd, basis, "refund granted")


def _authorised(f: ReturnFacts, p: Policy, actor: Actor, cmd: Command, basis: RefundBasis, done: str) -> Outcome:
    """A refund of cmd.amount at once when the actor's role covers the return's cumulative amount, else
    escalated to the role that does."""
    assert cmd.amount is not None
    plan = _Plan(f)
    cause = f"command:{cmd.command_id}"
    cumulative = f.authority_used + cmd.amount
    if p.authority.covers(actor.role, f.currency, cumulative):
        plan.add(RefundNow(cause, cmd.amount, basis, actor, cmd.note))
        _supersede(plan)
        return Outcome(200, "refunded", done, tuple(plan.actions), amount=cmd.amount)
    required = p.authority.required_role(f.currency, cumulative)
    reason = f"{actor.actor_id} ({actor.role.value}) granted {cmd.amount}; {cumulative} in all is above their authority"
    plan.add(Escalate(cause, cmd.amount, basis, required, reason, requested_by=actor.actor_id))
    return Outcome(
        202,
        "escalated",
        f"waits for a {required.value}",
        tuple(plan.actions),
        required_role=required,
        amount=cmd.amount,
    )


def _convert(f: ReturnFacts, p: Policy, actor: Actor, cmd: Command) -> Outcome:
    """An exchange that cannot be sent (out of stock, or the customer would rather have the money) becomes
    a refund of the goods received, once, through the actor's authority like any other refund."""
    if f.kind != ReturnKind.exchange:
        return _refused(409, f"a {f.kind.value} return has no exchange to convert")
    if any(e.basis == RefundBasis.exchange_conversion for e in f.escalations):
        return _refused(409, "the conversion of this exchange waits in the queue: approve it")
    if _converting(f):
        return _refused(409, "this exchange was already converted to a refund")
    if not f.receipts:
        return _refused(409, "the exchange's goods have not been received yet")
    if f.replacement_shipped:
        return _refused(409, "the exchange's replacement already shipped: it is not converted to a refund")
    due = min(f.goods_value, f.headroom)
    if due <= 0:
        return _refused(409, "nothing is left to refund on this return")
    if cmd.amount is not None and not 0 < cmd.amount <= due:
        return _refused(422, f"amount must be between 1 and the goods' value {due} {f.currency}", "amount")
    amount = cmd.amount if cmd.amount is not None else due
    converted = Command(cmd.command_id, cmd.action, amount, cmd.note)
    return _authorised(f, p, actor, converted, RefundBasis.exchange_conversion, "exchange converted to a refund")


def _approve(f: ReturnFacts, p: Policy, actor: Actor, cmd: Command, esc: OpenEscalation) -> Outcome:
    if cmd.amount is not None and not 0 < cmd.amount <= esc.amount:
        return _refused(422, f"amount must be between 1 and the escalated {esc.amount}", "amount")
    plan = _Plan(f)
    amount = min(cmd.amount if cmd.amount is not None else esc.amount, f.headroom)
    if amount <= 0:
        plan.add(CloseEscalation(esc.escalation_id, "superseded", actor.actor_id))
        return Outcome(409, "refused", "nothing is left to refund on this return", tuple(plan.actions))
    cumulative = f.authority_used + amount
    if not p.authority.covers(actor.role, f.currency, cumulative):
        required = p.authority.required_role(f.currency, cumulative)
        if ROLE_ORDER.index(required) > ROLE_ORDER.index(esc.required_role):
            plan.add(Reescalate(esc.escalation_id, required, f"{cumulative} refunded in all needs a {required.value}"))
        return Outcome(
            202,
            "escalated",
            f"a {actor.role.value} cannot approve {amount}: waits for a {required.value}",
            tuple(plan.actions),
            required_role=required,
            amount=amount,
        )
    plan.add(RefundNow(f"escalation:{esc.escalation_id}", amount, esc.basis, actor, cmd.note, esc.escalation_id))
    plan.add(CloseEscalation(esc.escalation_id, "approved", actor.actor_id))
    _supersede(plan)
    return Outcome(200, "refunded", "escalated refund approved", tuple(plan.actions), amount=amount)


def _reject(f: ReturnFacts, p: Policy, actor: Actor, cmd: Command, esc: OpenEscalation) -> Outcome:
    cumulative = f.authority_used + esc.amount
    if not p.authority.covers(actor.role, f.currency, cumulative):
        required = p.authority.required_role(f.currency, cumulative)
        return _refused(403, f"a {actor.role.value} cannot reject a refund that needs a {required.value}")
    plan = _Plan(f)
    plan.add(Reject(f"reject:{esc.escalation_id}", esc.escalation_id, esc.amount, actor, cmd.note))
    plan.add(CloseEscalation(esc.escalation_id, "rejected", actor.actor_id))
    return Outcome(200, "rejected", "refund rejected", tuple(plan.actions), amount=esc.amount)


def _supersede(plan: _Plan) -> None:
    """Open escalations asking for more than is left refundable are closed."""
    for e in plan.facts.escalations:
        if e.amount > plan.facts.headroom:
            plan.add(CloseEscalation(e.escalation_id, "superseded"))


# -- a batch of commands ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CommandIn:
    """A person's command as it arrived (HTTP or `refunds.commands`), before its actor is known."""

    command_id: str
    return_id: UUID
    source: str  # http | kafka
    actor_id: str
    action: str
    amount: int | None
    note: str | None
    correlation_id: str
    idempotency_key: str | None = None
    unauthenticated: str | None = None  # why a Kafka command does not prove its actor (returnflow.commands)
    escalation_id: str | None = None


@dataclass(frozen=True)
class Known:
    """A return as loaded: the facts the rules see, and what its events and payments need besides."""

    facts: ReturnFacts
    customer_key: str
    correlation_id: str
    order_id: str
    shop_id: str = ""


@dataclass(frozen=True)
class Planned:
    """Actions decided for a return (its facts as they were before them), to be saved with their events."""

    known: Known
    actions: Sequence[Action]
    correlation_id: str


@dataclass(frozen=True)
class Ruling:
    """What became of a command: recorded for every one (the authority log)."""

    command: CommandIn
    actor: Actor | None
    outcome: Outcome
    parked: bool = False


PARKED = Outcome(202, "parked", "return not known yet: the decision waits for it and is applied when it arrives")


@dataclass(frozen=True)
class Answered:
    """The first command under an idempotency key and its answer so far (parked until its return arrives)."""

    command: CommandIn
    outcome: Outcome


IDEMPOTENCY_FIELDS = ("return_id", "action", "amount", "note", "escalation_id")


def reused_key(first: CommandIn, again: CommandIn) -> Outcome | None:
    """A retry must repeat its first request: 422 naming what differs (the first answer is never given
    to another request), None when it is the same request."""
    differs = [n for n in IDEMPOTENCY_FIELDS if getattr(first, n) != getattr(again, n)]
    if not differs:
        return None
    return _refused(
        422, f"this Idempotency-Key was first used for another request ({', '.join(differs)} differ)", "Idempotency-Key"
    )


def unauthenticated(reason: str) -> Outcome:
    """A command that does not prove its actor is refused before anything else: never executed."""
    return _refused(401, f"not authenticated: {reason} ({REFUSAL_TEXT.get(reason, reason)})")


REFUSAL_REASONS = {401: "unknown_actor", 403: "above_authority", 404: "unknown_return", 409: "conflict", 422: "invalid"}


def refusal_reason(c: CommandIn, o: Outcome) -> str | None:
    """The refusal metric's reason for a command's outcome; None when it was not refused."""
    if c.unauthenticated:
        return c.unauthenticated
    return REFUSAL_REASONS.get(o.status) if o.result == "refused" else None


@dataclass
class CommandsDecided:
    outcomes: list[Outcome] = field(default_factory=list)  # one per command, in order
    rulings: list[Ruling] = field(default_factory=list)  # the commands to record (replays are not)
    planned: list[Planned] = field(default_factory=list)


def decide_commands(
    commands: Sequence[CommandIn],
    actors: Mapping[str, Actor],
    known: Mapping[UUID, Known],
    replays: Mapping[str, Answered],
    p: Policy,
    shop_policies: Mapping[str, Policy] | None = None,
) -> CommandsDecided:
    """Each command in order, with the actor's roster role, each seeing the effect of the ones before.
    A retry (same idempotency key, same request) gets the first answer, another request under that key
    a 422; a command from a known actor for a return not known yet is parked until the return arrives
    (HTTP and Kafka alike: a decision that came early is applied, never lost to a 404). A return of a shop
    in `shop_policies` is decided with that shop's policy, every other with `p`."""
    facts = {rid: k.facts for rid, k in known.items()}
    shop_policies = shop_policies or {}
    out = CommandsDecided()
    for c in commands:
        if c.idempotency_key and (first := replays.get(c.idempotency_key)):
            out.outcomes.append(reused_key(first.command, c) or first.outcome)
            continue
        actor = actors.get(c.actor_id)
        f = facts.get(c.return_id)
        if c.unauthenticated:
            out.outcomes.append(unauthenticated(c.unauthenticated))
            out.rulings.append(Ruling(c, None, out.outcomes[-1]))
            continue
        if actor is not None and f is None:
            ruling = Ruling(c, actor, PARKED, parked=True)
        else:
            cmd = Command(c.command_id, c.action, c.amount, c.note, c.escalation_id)
            k = known.get(c.return_id)
            policy = shop_policies.get(k.shop_id, p) if k is not None else p
            ruling = Ruling(c, actor, decide_command(f, policy, actor, cmd))
            if f is not None and ruling.outcome.actions:
                out.planned.append(
                    Planned(replace(known[c.return_id], facts=f), ruling.outcome.actions, c.correlation_id)
                )
                for a in ruling.outcome.actions:
                    f = fold(f, a)
                facts[c.return_id] = f
        out.outcomes.append(ruling.outcome)
        out.rulings.append(ruling)
    return out


# -- work items a person closes: declined refunds, clawbacks -----------------------------------------------------

FAILURE_ACTIONS = ("retry", "settled_offline", "close")
CLAWBACK_RESOLUTIONS = ("waived", "recovered_off_platform", "written_off")
RESOLVER = Role.supervisor  # the lowest role that may close a declined refund or a clawback


@dataclass(frozen=True)
class Resolution:
    """What became of a work item's resolution request: 200 resolved now or already (the same way, an
    idempotent repeat), else refused (403 role, 404/409 nothing to resolve, 409 resolved another way)."""

    status: int
    result: str  # resolved | already_resolved | refused
    message: str
    field: str | None = None

    @property
    def takes_effect(self) -> bool:
        return self.result == "resolved"


def _not_resolved(status: int, message: str, fld: str | None = None) -> Resolution:
    return Resolution(status, "refused", message, fld)


def may_resolve(actor: Actor) -> bool:
    return ROLE_ORDER.index(actor.role) >= ROLE_ORDER.index(RESOLVER)


def resolve_failure(
    actor: Actor,
    amount: int | None,
    done_action: str | None,
    action: str,
    headroom: int,
    named: str | None = None,
) -> Resolution:
    """A declined refund (its `amount`; None: no declined refund of the return to resolve) closed by a person.

    - only a supervisor or above (403);
    - nothing declined to resolve: 409 (naming `refund_id` when one was named);
    - already resolved: the same action again is the same answer (200), another one 409 naming `action`;
    - a retry pays the amount again: only while the return has that much left refundable (409), since the
      money was released when the gateway declined it and may have been refunded another way since.
    """
    if not may_resolve(actor):
        return _not_resolved(403, f"a {actor.role.value} cannot resolve a declined refund (a {RESOLVER.value} can)")
    if amount is None:
        what = f"refund {named!r} is not a declined refund of this return" if named else "no declined refund waits"
        return _not_resolved(409, what, "refund_id" if named else None)
    if done_action is not None:
        if done_action == action:
            return Resolution(200, "already_resolved", f"already resolved: {action}")
        return _not_resolved(409, f"already resolved another way: {done_action}", "action")
    if action == "retry" and amount > headroom:
        return _not_resolved(409, f"cannot pay {amount} again: only {headroom} remains refundable", "action")
    return Resolution(200, "resolved", f"declined refund resolved: {action}")


def resolve_clawback(actor: Actor, exists: bool, done: str | None, resolution: str) -> Resolution:
    """A clawback closed by a person (never a charge): supervisor or above (403), an unknown one 404; once
    resolved, the same resolution again is the same answer (200), another one 409 naming `resolution`."""
    if not may_resolve(actor):
        return _not_resolved(403, f"a {actor.role.value} cannot resolve a clawback (a {RESOLVER.value} can)")
    if not exists:
        return _not_resolved(404, "unknown clawback")
    if done is not None:
        if done == resolution:
            return Resolution(200, "already_resolved", f"already resolved: {resolution}")
        return _not_resolved(409, f"already resolved another way: {done}", "resolution")
    return Resolution(200, "resolved", f"clawback resolved: {resolution}")


# -- paying ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Due:
    """A pending refund leased for payment."""

    refund_id: str
    return_id: UUID
    payment_id: str  # the order's payment at the provider (payment_reference), else its order id
    amount: int
    currency: str
    basis: str
    idempotency_key: str
    attempts: int
    correlation_id: str
    gateway_reference: str | None = None  # the provider's id of it, when an earlier series left it pending
    shop_id: str | None = None  # whose provider pays it (the shops file), else the default provider


@dataclass(frozen=True)
class PaymentResult:
    """The gateway's answer to one attempt series: paid (`ok`), refused for good (the amount is released
    and a person decides what next), or unknown (`retryable`: asked again later with the same key)."""

    due: Due
    ok: bool
    reference: str | None
    error: str | None
    retryable: bool
    retry_in_s: float = 0.0

    @property
    def failed_for_good(self) -> bool:
        return not self.ok and not self.retryable

    @property
    def to_retry(self) -> bool:
        return not self.ok and self.retryable


@dataclass(frozen=True)
class WebhookOutcome:
    """A refund the provider settled asynchronously (its webhook): the provider's id of it, our refund id
    (from the metadata we sent), paid or declined for good (a still-pending update is not reported)."""

    reference: str
    refund_id: str | None
    ok: bool
    error: str | None = None


def webhook_results(pending: Sequence[Due], settled: Sequence[WebhookOutcome]) -> list[PaymentResult]:
    """A provider's settled refunds matched to the ledger's pending ones (by our refund id from the
    metadata, else by the provider's reference); one result per pending refund, the last word winning.
    A refund the provider still holds as pending never settles here (it is not in `settled`)."""
    by_id = {d.refund_id: d for d in pending}
    by_ref = {d.gateway_reference: d for d in pending if d.gateway_reference}
    out: dict[str, PaymentResult] = {}
    for w in settled:
        d = by_id.get(w.refund_id or "") or by_ref.get(w.reference)
        if d is not None:
            out[d.refund_id] = PaymentResult(d, w.ok, w.reference, w.error, retryable=False)
    return list(out.values())


def taking_effect(planned: Sequence[Planned], recorded: set[tuple[UUID, str]]) -> list[tuple[Planned, Action]]:
    """The actions that take effect, in order: each decided cause only where its decision was recorded
    now (a concurrent writer may have decided it first); closing and re-escalating always."""
    return [
        (p, a)
        for p in planned
        for a in p.actions
        if isinstance(a, CloseEscalation | Reescalate) or (p.known.facts.return_id, a.cause) in recorded
    ]


# -- team numbers (the supervisors' KPIs) --------------------------------------------------------------------

TEAM_MAX_DAYS = 92  # a quarter: per (person, day) rows for a team of ~20 stay a few thousand


def team_range(start: date, end: date, max_days: int = TEAM_MAX_DAYS) -> str | None:
    """Why a `from`..`to` range (both days included) is refused, or None: `to` before `from`, or longer
    than `max_days`."""
    if end < start:
        return "`to` is before `from`"
    if (end - start).days + 1 > max_days:
        return f"at most {max_days} days from `from` to `to`"
    return None


def authority_share_bp(grants: Iterable[tuple[int, int | None]]) -> int | None:
    """The share of their authority a person used on the returns they granted free refunds on, in basis
    points (10000 = all of it), averaged over those returns: each is (what they granted on the return,
    their cumulative limit per return). A return without a limit (an owner, a full-trust preset: None) or
    with none (0) has no share and is left out; None when no return is left. A share is capped at 100 %
    (a grant approved above the limit by a higher role is not the person's authority)."""
    shares = [min(10_000, granted * 10_000 // limit) for granted, limit in grants if limit]
    return sum(shares) // len(shares) if shares else None
