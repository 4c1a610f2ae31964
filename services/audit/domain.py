"""Pure decisions of the audit service: how the two sides of a stock movement are paired and what
a pair (or a lonely side) means. No I/O; the clock is an argument.

A *side* is one attestation of a movement: the warehouse's physical record (`inventory.attestations`)
or the returns team's check (`POST /v1/inventory/checks`, `inventory.checks`, `returnflow audit
check`). A *case* is everything recorded for one (return, SKU). `decide(case, now, policy)` returns
the outcomes for the case's open sides; applying them and deciding again gives nothing new.

Rules, in the order they are applied:

1. Unknown return. Sides of a return not (yet) seen on `returns.requested` wait `unknown_grace`
   (counted from when the audit service recorded them: an attestation may overtake its
   return.requested). Past it, one `unknown_return` discrepancy holds them; later sides of that
   still-unknown return join it.
2. Double relist. One `relist` per (return, SKU) per source. Every further relist from the same
   source is `double_relist` (one discrepancy per case; later ones join it).
3. Late counterpart. A side whose counterpart (other source, same movement) was already closed alone
   as `missing_side` or `unknown_return` joins that discrepancy instead of waiting for a partner.
4. Pairs. A warehouse side and a returns-team side with the same movement, attested within
   `deadline` of each other, form a pair (a fully matching partner is preferred, then the earliest):
   `same_person` if one person attested both, else `quantity_mismatch` if the quantities differ,
   else verified.
5. Past the deadline. A side still alone once `deadline` has passed since it was attested (and it
   has been held `settle`, so a counterpart queued behind it can arrive) is closed with, in order
   of preference: a same-movement partner attested too late -> `missing_side` (both sides); an
   other-movement partner attested in time -> `kind_mismatch`; nobody -> `missing_side`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictInt

from contracts.events import Movement

Source = Literal["warehouse", "returns_team"]
SOURCES: tuple[Source, Source] = ("warehouse", "returns_team")
Reason = Literal["quantity_mismatch", "kind_mismatch", "same_person", "missing_side", "double_relist", "unknown_return"]
REASONS: tuple[Reason, ...] = (
    "quantity_mismatch",
    "kind_mismatch",
    "same_person",
    "missing_side",
    "double_relist",
    "unknown_return",
)
SOURCE_LABEL = {"warehouse": "warehouse", "returns_team": "returns team"}
_NAMESPACE = uuid.UUID("6f0e4c1e-2b7a-4f0d-9a51-3c7c1a0d5e21")


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


def same_person(a: str, b: str) -> bool:
    return a.strip().casefold() == b.strip().casefold()


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


def _secs(td: timedelta) -> str:
    return f"{td.total_seconds():g}s"


def decide(case: Case, now: datetime, policy: Policy) -> list[Outcome]:
    open_sides = sorted((s for s in case.sides if s.key not in case.closed), key=order)
    if not open_sides:
        return []
    members: dict[str, list[Side]] = {}
    reasons: dict[str, Reason] = {}
    for s in case.sides:
        c = case.closed.get(s.key)
        if c is not None and c.discrepancy_id is not None and c.reason is not None:
            members.setdefault(c.discrepancy_id, []).append(s)
            reasons[c.discrepancy_id] = c.reason

    def existing(reason: Reason) -> str | None:
        found = sorted(did for did, r in reasons.items() if r == reason)
        return found[0] if found else None

    # 1. unknown return
    if not case.return_known:
        did = existing("unknown_return")
        if did is not None:
            return [Attached(s, did, "unknown_return") for s in open_sides]
        if any(now >= s.received_at + policy.unknown_grace for s in open_sides):
            return [
                _discrepancy(
                    "unknown_return",
                    open_sides,
                    f"no return.requested for return {case.return_id} within {_secs(policy.unknown_grace)} "
                    f"of the first attestation ({'; '.join(_describe(s) for s in open_sides)})",
                )
            ]
        return []

    out: list[Outcome] = []
    remaining = list(open_sides)

    # 2. double relist
    doubles: list[Side] = []
    for source in SOURCES:
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
            continue
        firsts = [s for s in relists if s.key in case.closed]
        first = firsts[0] if firsts else relists[0]
        doubles += [s for s in relists if s.key not in case.closed and s is not first]
    if doubles:
        did = existing("double_relist")
        if did is not None:
            out += [Attached(s, did, "double_relist") for s in sorted(doubles, key=order)]
        else:
            out.append(
                _discrepancy(
                    "double_relist",
                    doubles,
                    f"{case.sku} relisted more than once for return {case.return_id} "
                    f"({'; '.join(_describe(s) for s in sorted(doubles, key=order))})",
                )
            )
        remaining = [s for s in remaining if s not in doubles]

    # 3. late counterparts join the discrepancy of the side that was closed alone
    for s in list(remaining):
        for did in sorted(members):
            ms = members[did]
            if (
                reasons[did] in ("missing_side", "unknown_return")
                and all(m.source != s.source for m in ms)
                and any(m.movement == s.movement for m in ms)
            ):
                out.append(Attached(s, did, reasons[did]))
                ms.append(s)
                remaining.remove(s)
                break

    # 4. pairs attested within the deadline
    taken: set[str] = set()
    for movement in Movement:
        ws = [s for s in remaining if s.source == "warehouse" and s.movement == movement]
        rs = [s for s in remaining if s.source == "returns_team" and s.movement == movement]
        for w in ws:
            in_time = [r for r in rs if r.key not in taken and abs(r.attested_at - w.attested_at) <= policy.deadline]
            if not in_time:
                continue
            good = [r for r in in_time if r.quantity == w.quantity and not same_person(r.person, w.person)]
            r = (good or in_time)[0]
            taken |= {w.key, r.key}
            if same_person(w.person, r.person):
                out.append(
                    _discrepancy(
                        "same_person",
                        (w, r),
                        f"{w.person} attested both sides of {movement.value} {case.sku}: a dual check needs two people",
                    )
                )
            elif w.quantity != r.quantity:
                out.append(
                    _discrepancy(
                        "quantity_mismatch",
                        (w, r),
                        f"{movement.value} {case.sku}: warehouse counted {w.quantity}, returns team {r.quantity}",
                    )
                )
            else:
                out.append(Verified(w, r))
    remaining = [s for s in remaining if s.key not in taken]

    # 5. sides alone past the deadline
    def overdue(s: Side) -> bool:
        return now > s.attested_at + policy.deadline and now >= s.received_at + policy.settle

    for s in list(remaining):
        if s.key in taken or not overdue(s):
            continue
        others = [o for o in remaining if o.source != s.source and o.key not in taken]
        late = [o for o in others if o.movement == s.movement]
        other_kind = [o for o in others if abs(o.attested_at - s.attested_at) <= policy.deadline]
        if late:
            o = late[0]
            gap = abs(o.attested_at - s.attested_at)
            out.append(
                _discrepancy(
                    "missing_side",
                    _pair(s, o),
                    f"{movement_label(s)}: the two sides were attested {_secs(gap)} apart "
                    f"(deadline {_secs(policy.deadline)})",
                )
            )
        elif other_kind:
            o = other_kind[0]
            w, r = _pair(s, o)
            extra = " (and by the same person)" if same_person(w.person, r.person) else ""
            out.append(
                _discrepancy(
                    "kind_mismatch",
                    (w, r),
                    f"{case.sku}: warehouse recorded {w.movement.value} x{w.quantity}, returns team checked "
                    f"{r.movement.value} x{r.quantity}{extra}",
                )
            )
        else:
            o = None
            missing = "returns team" if s.source == "warehouse" else "warehouse"
            out.append(
                _discrepancy(
                    "missing_side",
                    (s,),
                    f"{_describe(s)} has no {missing} side {_secs(policy.deadline)} after it was attested",
                )
            )
        taken.add(s.key)
        if o is not None:
            taken.add(o.key)
    return out


def movement_label(s: Side) -> str:
    return f"{s.movement.value} {s.sku}"


def apply(case: Case, outcomes: Iterable[Outcome]) -> Case:
    """The case after the outcomes are recorded (what storage does, for tests and reasoning)."""
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


def side_outcome(o: Outcome) -> str:
    if isinstance(o, Verified):
        return "verified"
    if isinstance(o, Discrepancy):
        return "discrepancy"
    return "attached"


# -- HTTP request bodies ---------------------------------------------------------------------------
class CheckRequest(BaseModel):
    """Body of POST /v1/inventory/checks: the returns team's side of a movement."""

    model_config = ConfigDict(extra="ignore")
    check_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        pattern=r"^[\w.:\-]+$",
        description="idempotency key: the same check_id again is the same check (a new one is generated if absent)",
    )
    return_id: UUID
    sku: str = Field(min_length=1, max_length=64)
    movement: Movement
    quantity: StrictInt = Field(ge=0, le=1_000_000)
    checked_at: AwareDatetime | None = Field(default=None, description="when the person checked; default now")
    checked_by: str | None = Field(
        default=None, max_length=128, description="optional; must be the person the bearer token belongs to"
    )
    note: str | None = Field(default=None, max_length=2000)


class ResolutionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    note: str = Field(min_length=1, max_length=4000)
