"""An exchange's replacement released at the parcel's first moving scan (services/refunds/rules.py
`_early_replacement`, `_check_early_replacement`, `_cancelled_after_release`): when the shop's policy ships
at the first scan, under the early refund's cap, clawback gate and return window; a clawback for a person
when the goods do not come back as described, or the exchange is cancelled after the replacement left."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.events import Condition, ReturnKind, Role
from services.refunds.rules import (
    Actor,
    Command,
    FlagClawback,
    Line,
    Policy,
    Receipt,
    ReceiptLine,
    ReleaseReplacement,
    ReturnFacts,
    Wait,
    authority_from,
    decide_command,
    evaluate,
    fold,
)
from tests.unit.test_refunds_policy import T0, facts_st, policy_st, receipt_line_st

exchange_st = facts_st().map(lambda f: replace(f, kind=ReturnKind.exchange))


@st.composite
def exchange_policy_st(draw):
    return replace(draw(policy_st()), replacement_at_first_scan=draw(st.booleans()))


fact_st = st.one_of(
    st.tuples(st.just("scan"), st.integers(0, 12)),  # days after the request
    st.tuples(st.just("receipt"), st.lists(receipt_line_st, min_size=1, max_size=4)),
    st.tuples(st.just("cancel")),
    st.tuples(st.just("out_of_stock")),
    st.tuples(st.just("shipped")),
    st.tuples(st.just("convert"), st.sampled_from(["convert_to_refund", "approve"])),
)
history_st = st.builds(
    lambda first, rest: [*first, *rest],
    st.sampled_from([[("scan", 1)], [("scan", 1)], [("scan", 9)], []]),
    st.lists(fact_st, max_size=8),
)


def run(f: ReturnFacts, p: Policy, steps):
    """Play the facts as they arrive at refunds, the policy applied after each; the final facts and every
    (facts before, action) taken."""
    log = []

    def take(actions):
        nonlocal f
        for a in actions:
            log.append((f, a))
            f = fold(f, a)

    owner = Actor("o1", Role.owner)
    take(evaluate(f, p))
    for n, step in enumerate(steps):
        kind = step[0]
        if kind == "scan" and f.first_moving_at is None:
            f = replace(f, first_moving_at=T0 + timedelta(days=step[1]))
        elif kind == "receipt" and not f.receipts:
            f = replace(f, receipts=(Receipt(f"r{n}", T0 + timedelta(days=3), tuple(step[1])),))
        elif kind == "cancel":
            f = replace(f, cancelled=True)
        elif kind == "out_of_stock" and not f.replacement_shipped:
            f = replace(f, out_of_stock=True)
        elif kind == "shipped" and not f.cancelled and (f.receipts or f.replacement_released):
            f = replace(f, replacement_shipped=True)  # the warehouse ships after a receipt or a release
        elif kind == "convert":
            take(decide_command(f, p, owner, Command(f"c{n}", step[1])).actions)
        take(evaluate(f, p))
    return f, log


@settings(max_examples=400, deadline=None)
@given(f=exchange_st, p=exchange_policy_st(), steps=history_st)
def test_never_released_when_the_shop_ships_at_receipt_or_above_the_cap(f, p, steps):
    _, log = run(f, p, steps)
    for before, a in log:
        if isinstance(a, ReleaseReplacement):
            assert p.replacement_at_first_scan
            assert before.goods_value <= p.early_refund_cap.get(before.currency, -1)
            assert before.recent_clawbacks <= p.early_refund_max_clawbacks
            assert before.first_moving_at is not None and not before.receipts and not before.cancelled
            assert not before.out_of_stock


@settings(max_examples=300, deadline=None)
@given(f=exchange_st, p=exchange_policy_st(), steps=history_st, data=st.data())
def test_at_most_one_release_per_return_whatever_the_order(f, p, steps, data):
    shuffled = data.draw(st.permutations(steps))
    for order in (steps, shuffled):
        final, log = run(f, p, order)
        assert sum(isinstance(a, ReleaseReplacement) for _, a in log) <= 1
        assert final.replacement_released == any(isinstance(a, ReleaseReplacement) for _, a in log)
        assert evaluate(final, p) == []  # idempotent: nothing is decided twice


@settings(max_examples=400, deadline=None)
@given(f=exchange_st, p=exchange_policy_st(), steps=history_st)
def test_a_clawback_on_an_exchange_only_after_a_release_and_never_above_its_goods(f, p, steps):
    _, log = run(f, p, steps)
    for before, a in log:
        if isinstance(a, FlagClawback):
            assert before.replacement_released
            assert 0 < a.amount <= before.goods_value


# -- examples that read as the product's rules ------------------------------------------------------------------

SHIPS_EARLY = Policy(authority_from("tiered"), replacement_at_first_scan=True)


def exchange(**over) -> ReturnFacts:
    base = ReturnFacts(
        return_id=uuid.uuid4(),
        kind=ReturnKind.exchange,
        currency="CNY",
        paid_total=8_000,
        lines=(Line("A", 2, 4_000),),
        requested_at=T0,
        first_moving_at=T0 + timedelta(days=1),
    )
    return replace(base, **over)


def test_a_moving_parcel_releases_the_replacement_once_when_the_shop_ships_at_the_first_scan():
    f = exchange()
    (a,) = evaluate(f, SHIPS_EARLY)
    assert isinstance(a, ReleaseReplacement) and a.cause == "early_replacement"
    assert evaluate(fold(f, a), SHIPS_EARLY) == []


def test_without_the_setting_above_the_cap_with_clawbacks_or_late_it_ships_at_receipt():
    cases = [
        (Policy(authority_from("tiered")), {}, "after receipt"),
        (replace(SHIPS_EARLY, early_refund_cap={"CNY": 7_999}), {}, "above the early-refund cap"),
        (replace(SHIPS_EARLY, early_refund_cap={"USD": 10**9}), {}, "above the early-refund cap"),
        (SHIPS_EARLY, {"recent_clawbacks": 1}, "1 recent clawback(s)"),
        (replace(SHIPS_EARLY, return_window=timedelta(days=7)), {"first_moving_at": T0 + timedelta(days=8)}, "window"),
        (SHIPS_EARLY, {"out_of_stock": True}, "out of stock"),
    ]
    for p, over, why in cases:
        waits = [a for a in evaluate(exchange(**over), p) if isinstance(a, Wait)]
        assert [w.cause for w in waits] == ["early_replacement"] and why in waits[0].reason
        assert waits[0].reason.endswith("ship at receipt")


def test_the_early_refund_switch_does_not_decide_the_replacement():
    (a,) = evaluate(exchange(), replace(SHIPS_EARLY, early_refund=False))
    assert isinstance(a, ReleaseReplacement)


def test_a_receipt_short_of_what_was_asked_after_a_release_flags_its_value_for_a_person():
    f = fold(exchange(), ReleaseReplacement("early_replacement", "moving"))
    got = (ReceiptLine("A", 1, Condition.as_described), ReceiptLine("A", 1, Condition.damaged))
    f = replace(f, receipts=(Receipt("r1", T0, got),))
    claw, wait = evaluate(f, SHIPS_EARLY)
    assert isinstance(claw, FlagClawback) and claw.amount == 4_000 and "A: 1 of 2 as described (damaged)" in claw.reason
    assert isinstance(wait, Wait) and wait.cause == "receipt:r1"
    whole = replace(f, receipts=(Receipt("r2", T0, (ReceiptLine("A", 2, Condition.as_described),)),))
    assert [type(a) for a in evaluate(whole, SHIPS_EARLY)] == [Wait]  # all came back: nothing to claw back


def test_a_cancel_after_the_released_replacement_left_flags_the_goods_value():
    released = fold(exchange(), ReleaseReplacement("early_replacement", "moving"))
    assert evaluate(replace(released, cancelled=True), SHIPS_EARLY) == []  # nothing left the warehouse
    (claw,) = evaluate(replace(released, cancelled=True, replacement_shipped=True), SHIPS_EARLY)
    assert isinstance(claw, FlagClawback) and claw.amount == 8_000 and claw.cause == "clawback:cancelled"
    assert evaluate(replace(exchange(), cancelled=True, replacement_shipped=True), SHIPS_EARLY) == []


def test_a_receipt_or_a_shipment_before_the_scan_leaves_nothing_to_release():
    got = (Receipt("r1", T0, (ReceiptLine("A", 2, Condition.as_described),)),)
    assert evaluate(exchange(receipts=got), SHIPS_EARLY) == []
    assert evaluate(exchange(replacement_shipped=True), SHIPS_EARLY) == []
