"""Pure decisions of the audit service: how the two sides of a stock movement are paired and what
a pair (or a lonely side) means. No I/O; the clock is an argument.

A *side* is one attestation of a movement: the warehouse's physical record (`inventory.attestations`)
or the returns team's check (`POST /v1/inventory/checks`, `inventory.checks`, `returnflow audit
check`). A *case* is everything recorded for one (return, SKU). `decide(case, now, policy)` returns
the outcomes for the case's open sides; applying them and deciding again gives nothing new.

Rules, in the order they are applied (one function each):

1. `unknown_return`. Sides of a return not (yet) seen on `returns.requested` wait `unknown_grace`
   (counted from when the audit service recorded them: an attestation may overtake its
   return.requested). Past it, one `unknown_return` discrepancy holds them; later sides of that
   still-unknown return join it.
2. `double_relist`. One `relist` per (return, SKU) per source. Every further relist from the same
   source is `double_relist` (one discrepancy per case; later ones join it).
3. `late_counterparts`. A side whose counterpart (other source, same movement) was already closed
   alone as `missing_side` or `unknown_return` joins that discrepancy instead of waiting for a partner.
4. `pairs_in_time`. A warehouse side and a returns-team side with the same movement, attested within
   `deadline` of each other, form a pair (a fully matching partner is preferred, then the earliest):
   `same_person` if one person attested both, else `quantity_mismatch` if the quantities differ,
   else verified (`judge_pair`).
5. `alone_past_deadline`. A side still alone once `deadline` has passed since it was attested (and
   it has been held `settle`, so a counterpart queued behind it can arrive) is closed with, in order
   of preference: a same-movement partner attested too late -> `missing_side` (both sides); an
   other-movement partner attested in time -> `kind_mismatch`; nobody -> `missing_side`.

Who may resolve a discrepancy (`refuse_resolution`), when a check is too far in the future
(`in_the_future`) and when the chain head is anchored outside PostgreSQL (`anchor_due`: after a
transaction that appended entries, else once per `anchor_every`) are decided here too.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal, get_args
from uuid import UUID

from contracts.events import DiscrepancyReason, Movement

Source = Literal["warehouse", "returns_team"]
SOURCES: tuple[Source, Source] = ("warehouse", "returns_team")
Reason = DiscrepancyReason
REASONS: tuple[Reason, ...] = get_args(DiscrepancyReason)
SOURCE_LABEL = {"warehouse": "warehouse", "returns_team": "returns team"}
_NAMESPACE = uuid.UUID("6f0e4c1e-2b7a-4f0d-9a51-3c7c1a0d5e21")
# a check dated further ahead than this is refused: clocks drift, but not by hours
MAX_FUTURE_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class Side:
    """One attestation of a stock movement, from one source."""

    source: Source
    side_id: str
    return_id: UUID
    sku: str
    movement: Movement
    quantity: int
    person: str
    attested_at: datetime
    received_at: datetime

    @property
    def key(self) -> str:
        return f"{self.source}:{self.side_id}"


@dataclass(frozen=True)
class Incoming:
    """A side as it arrives, with where it came from."""

    side: Side
    via: str  # kafka | http
    correlation_id: str
    note: str | None = None


@dataclass(frozen=True)
class Closed:
    """What the log already says about a side."""

    outcome: Literal["verified", "discrepancy", "attached"]
    discrepancy_id: str | None = None
    reason: Reason | None = None


@dataclass(frozen=True)
class Case:
    return_id: UUID
    sku: str
    return_known: bool
    sides: tuple[Side, ...]
    closed: Mapping[str, Closed] = field(default_factory=dict)


@dataclass(frozen=True)
class Policy:
    deadline: timedelta
    settle: timedelta = timedelta(0)
    unknown_grace: timedelta = timedelta(0)
    anchor_every: timedelta = timedelta(seconds=60)
    anchor_max_hashes: int = 2000


@dataclass(frozen=True)
class Verified:
    warehouse: Side
    returns_team: Side

    @property
    def sides(self) -> tuple[Side, ...]:
        return (self.warehouse, self.returns_team)


@dataclass(frozen=True)
class Discrepancy:
    id: str
    reason: Reason
    sides: tuple[Side, ...]
    details: str

    @property
    def movement(self) -> Movement:
        return self.sides[0].movement


@dataclass(frozen=True)
class Attached:
    side: Side
    discrepancy_id: str
    reason: Reason

    @property
    def sides(self) -> tuple[Side, ...]:
        return (self.side,)


Outcome = Verified | Discrepancy | Attached


def order(s: Side) -> tuple[datetime, str]:
    return (s.attested_at, s.key)


def person_id(a: str) -> str:
    """One person however their id is typed (" RT-Lin " is rt-lin)."""
    return a.strip().casefold()


def same_person(a: str, b: str) -> bool:
    return person_id(a) == person_id(b)


def discrepancy_id(reason: str, sides: Iterable[Side]) -> str:
    """Deterministic: the same sides and reason always name the same discrepancy."""
    return str(uuid.uuid5(_NAMESPACE, reason + "|" + ",".join(sorted(s.key for s in sides))))


def _discrepancy(reason: Reason, sides: Sequence[Side], details: str) -> Discrepancy:
    sides = tuple(sorted(sides, key=order))
    return Discrepancy(discrepancy_id(reason, sides), reason, sides, details)


def _pair(w: Side, r: Side) -> tuple[Side, Side]:
    return (w, r) if w.source == "warehouse" else (r, w)


def _describe(s: Side) -> str:
    return f"{SOURCE_LABEL[s.source]} {s.movement.value} x{s.quantity} by {s.person}"


def _describe_all(sides: Iterable[Side]) -> str:
    return "; ".join(_describe(s) for s in sides)


def _secs(td: timedelta) -> str:
    return f"{td.total_seconds():g}s"


def movement_label(s: Side) -> str:
    return f"{s.movement.value} {s.sku}"


@dataclass(frozen=True)
class Opened:
    """The discrepancies a case's closed sides already belong to: their members and reasons."""

    members: Mapping[str, tuple[Side, ...]]
    reasons: Mapping[str, Reason]

    @classmethod
    def of(cls, case: Case) -> Opened:
        members: dict[str, list[Side]] = {}
        reasons: dict[str, Reason] = {}
        for s in case.sides:
            c = case.closed.get(s.key)
            if c is not None and c.discrepancy_id is not None and c.reason is not None:
                members.setdefault(c.discrepancy_id, []).append(s)
                reasons[c.discrepancy_id] = c.reason
        return cls({did: tuple(ms) for did, ms in members.items()}, reasons)

    def existing(self, reason: Reason) -> str | None:
        """The discrepancy of this reason already open for the case (the first by id), if any."""
        found = sorted(did for did, r in self.reasons.items() if r == reason)
        return found[0] if found else None


Decided = tuple[list[Outcome], list[Side]]
"""A rule's outcomes, and the open sides it left for the next rule."""


def decide(case: Case, now: datetime, policy: Policy) -> list[Outcome]:
    open_sides = sorted((s for s in case.sides if s.key not in case.closed), key=order)
    if not open_sides:
        return []
    opened = Opened.of(case)
    if not case.return_known:
        return unknown_return(case, open_sides, opened, now, policy)
    relisted, remaining = double_relist(case, open_sides, opened)
    joined, remaining = late_counterparts(remaining, opened)
    paired, remaining = pairs_in_time(case.sku, remaining, policy)
    overdue = alone_past_deadline(case.sku, remaining, now, policy)
    return [*relisted, *joined, *paired, *overdue]


# -- 1. unknown return -----------------------------------------------------------------------------
def unknown_return(case: Case, open_sides: list[Side], opened: Opened, now: datetime, policy: Policy) -> list[Outcome]:
    did = opened.existing("unknown_return")
    if did is not None:
        return [Attached(s, did, "unknown_return") for s in open_sides]
    if not any(now >= s.received_at + policy.unknown_grace for s in open_sides):
        return []
    details = (
        f"no return.requested for return {case.return_id} within {_secs(policy.unknown_grace)} "
        f"of the first attestation ({_describe_all(open_sides)})"
    )
    return [_discrepancy("unknown_return", open_sides, details)]


# -- 2. double relist ------------------------------------------------------------------------------
def further_relists(case: Case, source: Source) -> list[Side]:
    """The open relists of one source after its first (recorded, else earliest) relist."""
    relists = sorted(
        (
            s
            for s in case.sides
            if s.source == source
            and s.movement == Movement.relist
            and not (s.key in case.closed and case.closed[s.key].reason == "double_relist")
        ),
        key=order,
    )
    if len(relists) < 2:
        return []
    firsts = [s for s in relists if s.key in case.closed]
    first = firsts[0] if firsts else relists[0]
    return [s for s in relists if s.key not in case.closed and s is not first]


def double_relist(case: Case, remaining: list[Side], opened: Opened) -> Decided:
    doubles = sorted((s for source in SOURCES for s in further_relists(case, source)), key=order)
    if not doubles:
        return [], remaining
    did = opened.existing("double_relist")
    out: list[Outcome]
    if did is not None:
        out = [Attached(s, did, "double_relist") for s in doubles]
    else:
        details = f"{case.sku} relisted more than once for return {case.return_id} ({_describe_all(doubles)})"
        out = [_discrepancy("double_relist", doubles, details)]
    return out, [s for s in remaining if s not in doubles]


# -- 3. late counterparts --------------------------------------------------------------------------
def _counterpart_of(s: Side, members: Sequence[Side]) -> bool:
    return all(m.source != s.source for m in members) and any(m.movement == s.movement for m in members)


def late_counterparts(remaining: list[Side], opened: Opened) -> Decided:
    """Sides joining the discrepancy of a side that was closed alone (missing_side, unknown_return)."""
    members = {did: list(ms) for did, ms in opened.members.items()}
    out: list[Outcome] = []
    left = list(remaining)
    for s in remaining:
        for did in sorted(members):
            if opened.reasons[did] in ("missing_side", "unknown_return") and _counterpart_of(s, members[did]):
                out.append(Attached(s, did, opened.reasons[did]))
                members[did].append(s)
                left.remove(s)
                break
    return out, left


# -- 4. pairs attested within the deadline ---------------------------------------------------------
def judge_pair(sku: str, w: Side, r: Side) -> Outcome:
    if same_person(w.person, r.person):
        details = f"{w.person} attested both sides of {w.movement.value} {sku}: a dual check needs two people"
        return _discrepancy("same_person", (w, r), details)
    if w.quantity != r.quantity:
        details = f"{w.movement.value} {sku}: warehouse counted {w.quantity}, returns team {r.quantity}"
        return _discrepancy("quantity_mismatch", (w, r), details)
    return Verified(w, r)


def partner_in_time(w: Side, candidates: Iterable[Side], policy: Policy) -> Side | None:
    """The returns-team side to pair with warehouse side `w`: within the deadline, a full match first."""
    in_time = [r for r in candidates if abs(r.attested_at - w.attested_at) <= policy.deadline]
    if not in_time:
        return None
    good = [r for r in in_time if r.quantity == w.quantity and not same_person(r.person, w.person)]
    return (good or in_time)[0]


def pairs_in_time(sku: str, remaining: list[Side], policy: Policy) -> Decided:
    taken: set[str] = set()
    out: list[Outcome] = []
    for movement in Movement:
        ws = [s for s in remaining if s.source == "warehouse" and s.movement == movement]
        rs = [s for s in remaining if s.source == "returns_team" and s.movement == movement]
        for w in ws:
            r = partner_in_time(w, (r for r in rs if r.key not in taken), policy)
            if r is not None:
                taken |= {w.key, r.key}
                out.append(judge_pair(sku, w, r))
    return out, [s for s in remaining if s.key not in taken]


# -- 5. sides alone past the deadline --------------------------------------------------------------
def overdue(s: Side, now: datetime, policy: Policy) -> bool:
    return now > s.attested_at + policy.deadline and now >= s.received_at + policy.settle


def close_alone(sku: str, s: Side, others: list[Side], policy: Policy) -> tuple[Discrepancy, Side | None]:
    """An overdue side's discrepancy, and the other-source side it takes along (if any)."""
    late = [o for o in others if o.movement == s.movement]
    if late:
        o = late[0]
        gap = abs(o.attested_at - s.attested_at)
        details = (
            f"{movement_label(s)}: the two sides were attested {_secs(gap)} apart (deadline {_secs(policy.deadline)})"
        )
        return _discrepancy("missing_side", _pair(s, o), details), o
    other_kind = [o for o in others if abs(o.attested_at - s.attested_at) <= policy.deadline]
    if other_kind:
        w, r = _pair(s, other_kind[0])
        extra = " (and by the same person)" if same_person(w.person, r.person) else ""
        details = (
            f"{sku}: warehouse recorded {w.movement.value} x{w.quantity}, returns team checked "
            f"{r.movement.value} x{r.quantity}{extra}"
        )
        return _discrepancy("kind_mismatch", (w, r), details), other_kind[0]
    missing = "returns team" if s.source == "warehouse" else "warehouse"
    details = f"{_describe(s)} has no {missing} side {_secs(policy.deadline)} after it was attested"
    return _discrepancy("missing_side", (s,), details), None


def alone_past_deadline(sku: str, remaining: list[Side], now: datetime, policy: Policy) -> list[Outcome]:
    taken: set[str] = set()
    out: list[Outcome] = []
    for s in remaining:
        if s.key in taken or not overdue(s, now, policy):
            continue
        others = [o for o in remaining if o.source != s.source and o.key not in taken]
        found, partner = close_alone(sku, s, others, policy)
        out.append(found)
        taken |= {s.key} | ({partner.key} if partner is not None else set())
    return out


# -- applying outcomes -----------------------------------------------------------------------------
def apply(case: Case, outcomes: Iterable[Outcome]) -> Case:
    """The case after the outcomes are recorded (what the repository does, for tests and reasoning)."""
    closed = dict(case.closed)
    for o in outcomes:
        if isinstance(o, Verified):
            for s in o.sides:
                closed[s.key] = Closed("verified")
        elif isinstance(o, Discrepancy):
            for s in o.sides:
                closed[s.key] = Closed("discrepancy", o.id, o.reason)
        else:
            closed[o.side.key] = Closed("attached", o.discrepancy_id, o.reason)
    return replace(case, closed=closed)


# -- checks and resolutions ------------------------------------------------------------------------
def in_the_future(checked_at: datetime, now: datetime) -> bool:
    return checked_at > now + MAX_FUTURE_SKEW


def same_content(recorded: Mapping[str, Any], s: Side) -> bool:
    """Whether a side recorded under the same key says the same thing (else a retry is a conflict)."""
    return (
        recorded["return_id"] == s.return_id
        and recorded["sku"] == s.sku
        and recorded["movement"] == s.movement.value
        and recorded["quantity"] == s.quantity
        and recorded["person"] == s.person
    )


@dataclass(frozen=True)
class Refusal:
    """Why a resolution is refused."""

    why: Literal["unknown", "already_resolved", "attested_a_side"]
    message: str


def refuse_resolution(
    discrepancy_id: str, found: Mapping[str, Any] | None, people: Iterable[str], person: str
) -> Refusal | None:
    """A discrepancy is resolved once, by someone who attested none of its sides (a second pair of eyes)."""
    if found is None:
        return Refusal("unknown", f"unknown discrepancy {discrepancy_id!r}")
    if found["status"] == "resolved":
        return Refusal(
            "already_resolved", f"discrepancy {discrepancy_id} was already resolved by {found['resolved_by']}"
        )
    if any(same_person(p, person) for p in people):
        return Refusal("attested_a_side", f"{person} attested a side of this discrepancy; someone else must resolve it")
    return None


# -- anchoring the chain head ----------------------------------------------------------------------
AnchorReason = Literal["batch", "schedule"]


@dataclass(frozen=True)
class LastAnchor:
    seq: int
    at: datetime


def anchor_due(reason: AnchorReason, head_seq: int, last: LastAnchor | None, now: datetime, policy: Policy) -> bool:
    """At most one anchor per transaction that appended entries (`batch`: the head moved since the last
    anchor), and on the schedule only when no anchor at all was made for `anchor_every` (an idle log
    still shows, once per interval, that its head is unchanged)."""
    if reason == "batch":
        return head_seq > 0 and (last is None or head_seq != last.seq)
    return last is None or now - last.at >= policy.anchor_every


def next_scheduled_anchor_s(last: LastAnchor | None, now: datetime, policy: Policy) -> float:
    """Seconds until the scheduled anchor is due (0: now)."""
    if last is None:
        return 0.0
    return max(0.0, (last.at + policy.anchor_every - now).total_seconds())


# -- returns-team checks on Kafka that do not prove their person -------------------------------------
@dataclass(frozen=True)
class RefusedCheck:
    """A check from inventory.checks refused before anything else (returnflow.commands' reason): never a side."""

    event_id: UUID
    return_id: UUID
    check_id: str
    claimed_by: str
    reason: str
    correlation_id: str
    command: bytes  # the record value as it arrived
