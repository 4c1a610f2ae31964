"""Property tests of the dual-check matching (services/audit/rules.py): verified against every
discrepancy reason, and the invariants that make it safe to run again and again."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.events import Movement
from services.audit.rules import (
    Attached,
    Case,
    Discrepancy,
    Policy,
    Side,
    Verified,
    apply,
    decide,
)

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
POLICY = Policy(deadline=timedelta(hours=24), settle=timedelta(minutes=1), unknown_grace=timedelta(minutes=10))
RID = uuid.UUID("00000000-0000-0000-0000-0000000000aa")
SKU = "SKU-1"

people = st.sampled_from(["alice", "bob", "chen", "dana", "eve"])
movements = st.sampled_from(list(Movement))
non_relist = st.sampled_from([m for m in Movement if m != Movement.relist])
quantities = st.integers(min_value=0, max_value=50)
within = st.integers(min_value=0, max_value=int(POLICY.deadline.total_seconds())).map(lambda s: timedelta(seconds=s))
ids = st.text(alphabet="abcdef0123456789", min_size=4, max_size=8)


def side(source, side_id, movement, qty, person, at, received=None) -> Side:
    return Side(source, side_id, RID, SKU, movement, qty, person, at, received or at)


def case(*sides: Side, known: bool = True) -> Case:
    return Case(RID, SKU, known, tuple(sides))


def reasons(outcomes) -> list[str]:
    return sorted(o.reason if not isinstance(o, Verified) else "verified" for o in outcomes)


def settled(c: Case) -> datetime:
    """A time at which every side of the case is past every deadline and grace."""
    last = max(max(s.attested_at, s.received_at) for s in c.sides)
    return last + POLICY.deadline + POLICY.settle + POLICY.unknown_grace + timedelta(seconds=1)


@st.composite
def pairs(draw, same_movement=True, same_qty=True, same_who=False, gap=within):
    m = draw(movements if same_movement else non_relist)
    m2 = m if same_movement else draw(non_relist.filter(lambda x: x != m))
    q = draw(quantities)
    q2 = q if same_qty else draw(quantities.filter(lambda x: x != q))
    a = draw(people)
    b = a if same_who else draw(people.filter(lambda x: x != a))
    if same_who:
        b = draw(st.sampled_from([a, a.upper(), f" {a} "]))
    ta = T0 + draw(st.integers(0, 3600).map(lambda s: timedelta(seconds=s)))
    tb = ta + draw(gap)
    w = side("warehouse", "w-" + draw(ids), m, q, a, ta)
    r = side("returns_team", "r-" + draw(ids), m2, q2, b, tb)
    return (w, r) if draw(st.booleans()) else (r, w)


# -- each reason, and verified ------------------------------------------------------------------
@given(pairs())
def test_same_movement_quantity_two_people_in_time_is_verified(p):
    a, b = p
    out = decide(case(a, b), max(a.attested_at, b.attested_at), POLICY)
    assert len(out) == 1 and isinstance(out[0], Verified)
    v = out[0]
    assert v.warehouse.source == "warehouse" and v.returns_team.source == "returns_team"


@given(pairs(same_qty=False))
def test_different_quantity_is_quantity_mismatch_at_once(p):
    out = decide(case(*p), max(s.attested_at for s in p), POLICY)
    assert reasons(out) == ["quantity_mismatch"]
    assert {s.key for s in out[0].sides} == {s.key for s in p}


@given(pairs(same_who=True, same_qty=False) | pairs(same_who=True))
def test_one_person_on_both_sides_is_same_person(p):
    out = decide(case(*p), max(s.attested_at for s in p), POLICY)
    assert reasons(out) == ["same_person"]


@given(pairs(same_movement=False), st.data())
def test_different_movements_are_kind_mismatch_once_the_deadline_passed(p, data):
    c = case(*p)
    first = min(s.attested_at for s in p)
    assert decide(c, first + POLICY.deadline - timedelta(seconds=1), POLICY) == []
    later = first + POLICY.deadline + POLICY.settle + data.draw(within)
    out = decide(c, later, POLICY)
    assert reasons(out) == ["kind_mismatch"]


@given(
    st.sampled_from(["warehouse", "returns_team"]),
    movements,
    quantities,
    people,
    st.integers(0, 10**6).map(lambda s: timedelta(seconds=s)),
)
def test_a_side_alone_is_missing_side_only_past_the_deadline(source, m, q, who, extra):
    s = side(source, "x1", m, q, who, T0)
    c = case(s)
    assert decide(c, T0 + POLICY.deadline - timedelta(microseconds=1), POLICY) == []
    out = decide(c, T0 + POLICY.deadline + POLICY.settle + extra, POLICY)
    assert reasons(out) == ["missing_side"] and out[0].sides == (s,)


def test_a_side_received_late_is_given_the_settle_time_for_its_counterpart():
    s = side("warehouse", "w1", Movement.restock, 1, "alice", T0, received=T0 + timedelta(days=3))
    assert decide(case(s), T0 + timedelta(days=3, seconds=30), POLICY) == []
    assert reasons(decide(case(s), T0 + timedelta(days=3, minutes=2), POLICY)) == ["missing_side"]


@given(pairs(gap=st.integers(1, 10**6).map(lambda s: POLICY.deadline + timedelta(seconds=s))))
def test_counterpart_attested_past_the_deadline_is_missing_side_with_both(p):
    out = decide(case(*p), settled(case(*p)), POLICY)
    assert reasons(out) == ["missing_side"] and len(out[0].sides) == 2


@given(pairs(gap=st.integers(1, 10**6).map(lambda s: POLICY.deadline + timedelta(seconds=s))))
def test_late_counterpart_joins_the_missing_side_discrepancy_already_open(p):
    early, late = sorted(p, key=lambda s: s.attested_at)
    c = case(early)
    first = decide(c, late.attested_at, POLICY)
    assert reasons(first) == ["missing_side"]
    c = apply(case(early, late), first)
    out = decide(c, late.attested_at, POLICY)
    assert len(out) == 1 and isinstance(out[0], Attached)
    assert out[0].discrepancy_id == first[0].id and out[0].side == late


@given(st.integers(2, 5), st.sampled_from(["warehouse", "returns_team"]), people, st.data())
def test_relisting_a_sku_twice_for_one_return_is_one_double_relist(n, source, who, data):
    relists = [side(source, f"rl{i}", Movement.relist, 1, who, T0 + timedelta(minutes=i)) for i in range(n)]
    other = "returns_team" if source == "warehouse" else "warehouse"
    check = side(other, "chk", Movement.relist, 1, data.draw(people.filter(lambda p: p != who)), T0)
    order = data.draw(st.permutations([*relists, check]))
    out = decide(case(*order), T0 + timedelta(hours=1), POLICY)
    doubles = [o for o in out if isinstance(o, Discrepancy) and o.reason == "double_relist"]
    assert len(doubles) == 1 and {s.key for s in doubles[0].sides} == {s.key for s in relists[1:]}
    assert [type(o) for o in out if not isinstance(o, Discrepancy)] == [Verified]
    # a further relist later joins the same discrepancy instead of opening another
    extra = side(source, "rl-late", Movement.relist, 1, who, T0 + timedelta(hours=2))
    c = apply(case(*order, extra), out)
    again = decide(c, T0 + timedelta(hours=2), POLICY)
    assert len(again) == 1 and isinstance(again[0], Attached) and again[0].discrepancy_id == doubles[0].id


@given(pairs())
def test_unknown_return_waits_for_the_grace_then_is_a_discrepancy(p):
    c = case(*p, known=False)
    first, last = min(s.received_at for s in p), max(s.received_at for s in p)
    assert decide(c, first + POLICY.unknown_grace - timedelta(seconds=1), POLICY) == []  # may still be on its way
    out = decide(c, min(s.received_at for s in p) + POLICY.unknown_grace, POLICY)
    assert reasons(out) == ["unknown_return"] and len(out[0].sides) == 2
    # the same sides once the return is known in time: verified
    assert isinstance(decide(case(*p), last, POLICY)[0], Verified)


# -- invariants over arbitrary cases ------------------------------------------------------------
@st.composite
def cases(draw):
    n = draw(st.integers(1, 8))
    sides = []
    for i in range(n):
        at = T0 + draw(st.integers(0, 3 * 86400).map(lambda s: timedelta(seconds=s)))
        rec = at + draw(st.integers(0, 7200).map(lambda s: timedelta(seconds=s)))
        sides.append(
            side(
                draw(st.sampled_from(["warehouse", "returns_team"])),
                f"s{i}",
                draw(movements),
                draw(st.integers(0, 3)),
                draw(people),
                at,
                rec,
            )
        )
    return Case(RID, SKU, draw(st.booleans()), tuple(sides))


nows = st.integers(0, 5 * 86400).map(lambda s: T0 + timedelta(seconds=s))


def outcome_sides(o) -> list[str]:
    return [s.key for s in o.sides]


@settings(max_examples=300)
@given(cases(), nows)
def test_each_side_is_decided_at_most_once_and_deciding_again_adds_nothing(c, now):
    out = decide(c, now, POLICY)
    keys = [k for o in out for k in outcome_sides(o)]
    assert len(keys) == len(set(keys))
    assert decide(apply(c, out), now, POLICY) == []


@settings(max_examples=300)
@given(cases(), nows, st.randoms())
def test_the_order_sides_are_given_in_does_not_matter(c, now, rnd):
    shuffled = list(c.sides)
    rnd.shuffle(shuffled)
    assert decide(c, now, POLICY) == decide(Case(c.return_id, c.sku, c.return_known, tuple(shuffled)), now, POLICY)


@settings(max_examples=300)
@given(cases())
def test_every_side_is_decided_once_all_deadlines_passed(c):
    c = apply(c, decide(c, settled(c), POLICY))
    assert set(c.closed) == {s.key for s in c.sides}


@settings(max_examples=300)
@given(cases(), nows)
def test_verified_only_when_every_rule_holds(c, now):
    for o in decide(c, now, POLICY):
        if isinstance(o, Verified):
            w, r = o.warehouse, o.returns_team
            assert c.return_known
            assert (w.source, r.source) == ("warehouse", "returns_team")
            assert w.movement == r.movement and w.quantity == r.quantity
            assert w.person.strip().casefold() != r.person.strip().casefold()
            assert abs(w.attested_at - r.attested_at) <= POLICY.deadline


@settings(max_examples=300)
@given(cases(), st.data())
def test_no_side_is_called_missing_before_its_deadline(c, data):
    now = data.draw(nows)
    for o in decide(c, now, POLICY):
        if isinstance(o, Discrepancy) and o.reason == "missing_side" and len(o.sides) == 1:
            (s,) = o.sides
            assert now > s.attested_at + POLICY.deadline and now >= s.received_at + POLICY.settle


@settings(max_examples=200)
@given(pairs() | pairs(same_qty=False) | pairs(same_who=True), st.integers(1, 3), st.randoms())
def test_sides_delivered_several_times_in_any_order_give_the_same_result(p, copies, rnd):
    """Incremental arrival (duplicates dropped by key, as the service does) ends where one batch does."""
    deliveries = [s for s in p for _ in range(copies)]
    rnd.shuffle(deliveries)
    now = max(s.attested_at for s in p)
    c = case()
    for s in deliveries:
        if any(x.key == s.key for x in c.sides):
            continue
        c = Case(c.return_id, c.sku, True, (*c.sides, s), c.closed)
        c = apply(c, decide(c, now, POLICY))
    batch = apply(case(*p), decide(case(*p), now, POLICY))
    assert c.closed == batch.closed and len(batch.closed) == 2
