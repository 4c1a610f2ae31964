"""The refund policy's invariants, over random returns, policies and histories (hypothesis)."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.events import Condition, RefundBasis, ReturnKind, Role
from services.refunds.rules import (
    PRESETS,
    Actor,
    Authority,
    CloseEscalation,
    Command,
    Escalate,
    FlagClawback,
    Line,
    Paid,
    Policy,
    Receipt,
    ReceiptLine,
    RefundNow,
    ReturnFacts,
    Wait,
    authority_from,
    decide_command,
    evaluate,
    fold,
    value_of_units,
)

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
SKUS = ["A", "B", "C"]

lines_st = st.lists(
    st.builds(Line, st.sampled_from(SKUS), st.integers(1, 4), st.integers(0, 6_000)), min_size=1, max_size=4
)


@st.composite
def facts_st(draw):
    lines = tuple(draw(lines_st))
    worth = sum(x.qty * x.unit_price for x in lines)
    paid = worth + draw(st.integers(0, 3_000))
    requester = draw(st.none() | st.builds(Actor, st.sampled_from(["a1", "s1"]), st.sampled_from(list(Role))))
    return ReturnFacts(
        return_id=uuid.uuid4(),
        kind=draw(st.sampled_from([ReturnKind.return_and_refund, ReturnKind.return_and_refund, *ReturnKind])),
        currency=draw(st.sampled_from(["CNY", "CNY", "EUR"])),
        paid_total=paid,
        lines=lines,
        requested_at=T0,
        requester=requester,
        recent_clawbacks=draw(st.sampled_from([0, 0, 0, 1, 3])),
    )


@st.composite
def policy_st(draw):
    return Policy(
        authority=authority_from(draw(st.sampled_from(["tiered", "full_trust"]))),
        early_refund=draw(st.sampled_from([True, True, False])),
        early_refund_cap={"CNY": draw(st.sampled_from([0, 5_000, 50_000, 10**9]))},
        early_refund_max_clawbacks=draw(st.integers(0, 2)),
        return_window=draw(st.none() | st.just(timedelta(days=7))),
    )


receipt_line_st = st.builds(ReceiptLine, st.sampled_from(SKUS), st.integers(0, 5), st.sampled_from(list(Condition)))
step_st = st.one_of(
    st.tuples(st.just("scan"), st.integers(0, 12)),  # days after the request
    st.tuples(st.just("receipt"), st.lists(receipt_line_st, min_size=1, max_size=4)),
    st.tuples(st.just("cancel")),
    st.tuples(
        st.just("command"),
        st.sampled_from(["approve", "reject", "grant_free_refund", "convert_to_refund"]),
        st.none() | st.builds(Actor, st.sampled_from(["a1", "a2", "s1", "m1", "o1"]), st.sampled_from(list(Role))),
        st.none() | st.integers(-5, 12_000),
    ),
    st.tuples(st.just("fail_one")),  # the gateway definitively refused a refund (its amount is released)
)

# Most histories start with the parcel moving, as most returns do.
history_st = st.builds(
    lambda first, rest: [*first, *rest],
    st.sampled_from([[("scan", 1)], [("scan", 1)], [("scan", 9)], []]),
    st.lists(step_st, max_size=10),
)


def run(f: ReturnFacts, p: Policy, steps):
    """Play a history; return the final facts and every (facts before, action) taken."""
    log = []

    def take(actions):
        nonlocal f
        for a in actions:
            log.append((f, a))
            f = fold(f, a)

    take(evaluate(f, p))
    for n, step in enumerate(steps):
        kind = step[0]
        if kind == "scan" and f.first_moving_at is None:
            f = replace(f, first_moving_at=T0 + timedelta(days=step[1]))
        elif kind == "receipt" and not f.receipts:
            f = replace(f, receipts=(Receipt(f"r{n}", T0 + timedelta(days=3), tuple(step[1])),))
        elif kind == "cancel":
            f = replace(f, cancelled=True)
        elif kind == "command":
            _, action, actor, amount = step
            take(decide_command(f, p, actor, Command(f"c{n}", action, amount)).actions)
        elif kind == "fail_one":
            live = [i for i, r in enumerate(f.refunds) if not r.failed]
            if live:
                refunds = list(f.refunds)
                refunds[live[0]] = replace(refunds[live[0]], failed=True)
                f = replace(f, refunds=tuple(refunds))
        take(evaluate(f, p))
    return f, log


@settings(max_examples=400, deadline=None)
@given(f=facts_st(), p=policy_st(), steps=history_st)
def test_refunds_never_exceed_paid_total(f, p, steps):
    final, log = run(f, p, steps)
    assert final.reserved <= final.paid_total
    for before, a in log:
        if isinstance(a, RefundNow):
            assert 0 < a.amount <= before.headroom


@settings(max_examples=400, deadline=None)
@given(f=facts_st(), p=policy_st(), steps=history_st)
def test_nothing_above_an_actors_authority(f, p, steps):
    _, log = run(f, p, steps)
    for before, a in log:
        if isinstance(a, RefundNow) and a.actor is not None:
            assert p.authority.covers(a.actor.role, before.currency, before.authority_used + a.amount)
        if isinstance(a, RefundNow) and a.basis in (RefundBasis.agent_authority, RefundBasis.refund_only):
            assert a.actor is not None  # discretionary money always has an accountable actor


@settings(max_examples=400, deadline=None)
@given(f=facts_st(), p=policy_st(), steps=history_st)
def test_no_early_refund_before_a_moving_scan(f, p, steps):
    _, log = run(f, p, steps)
    for before, a in log:
        if isinstance(a, RefundNow) and a.basis == RefundBasis.early_scan:
            assert before.first_moving_at is not None
            assert before.kind == ReturnKind.return_and_refund
            assert not before.receipts


@settings(max_examples=400, deadline=None)
@given(f=facts_st(), p=policy_st(), steps=history_st)
def test_receipt_refunds_never_pay_for_units_not_received(f, p, steps):
    final, log = run(f, p, steps)
    received: dict[str, int] = {}
    as_described: dict[str, int] = {}
    for r in final.receipts:
        for x in r.lines:
            if x.condition != Condition.missing:
                received[x.sku] = received.get(x.sku, 0) + x.qty_received
            if x.condition == Condition.as_described:
                as_described[x.sku] = as_described.get(x.sku, 0) + x.qty_received
    paid_by_receipt = [a for _, a in log if isinstance(a, RefundNow) and a.basis == RefundBasis.warehouse_receipt]
    assert sum(a.amount for a in paid_by_receipt) <= value_of_units(final.lines, received)
    automatic = sum(a.amount for a in paid_by_receipt if a.actor is None)
    assert automatic <= value_of_units(final.lines, as_described)


@settings(max_examples=300, deadline=None)
@given(f=facts_st(), p=policy_st(), steps=history_st)
def test_evaluation_is_idempotent(f, p, steps):
    final, _ = run(f, p, steps)
    assert evaluate(final, p) == []


# -- examples that read as the product's rules ------------------------------------------------------------------

TIERED = Policy(authority_from("tiered"))


def facts(**over) -> ReturnFacts:
    base = ReturnFacts(
        return_id=uuid.uuid4(),
        kind=ReturnKind.return_and_refund,
        currency="CNY",
        paid_total=10_000,
        lines=(Line("A", 2, 4_000),),
        requested_at=T0,
    )
    return replace(base, **over)


def test_presets():
    assert PRESETS["tiered"]["CNY"] == {
        Role.agent: 2_000,
        Role.supervisor: 5_000,
        Role.manager: 10_000,
        Role.owner: None,
    }
    tiered = authority_from("tiered")
    assert [tiered.required_role("CNY", n) for n in (2_000, 2_001, 5_001, 10_001)] == list(Role)
    assert tiered.required_role("EUR", 1) == Role.owner  # no limits configured for EUR: only the owner
    assert authority_from("full_trust").covers(Role.agent, "EUR", 10**9)
    custom = authority_from("custom", {"EUR": {"agent": 1_000, "supervisor": None}})
    assert custom.required_role("EUR", 5_000) == Role.supervisor
    with pytest.raises(ValueError):
        authority_from("custom", {})


def test_early_refund_on_a_moving_scan_within_cap():
    (a,) = evaluate(facts(first_moving_at=T0 + timedelta(days=1)), TIERED)
    assert isinstance(a, RefundNow) and a.basis == RefundBasis.early_scan and a.amount == 8_000


def test_no_early_refund_above_cap_or_with_clawbacks_then_receipt_pays_received_quantity():
    p = replace(TIERED, early_refund_cap={"CNY": 5_000})
    f = facts(first_moving_at=T0)
    (w,) = evaluate(f, p)
    assert isinstance(w, Wait) and "cap" in w.reason
    (w2,) = evaluate(facts(first_moving_at=T0, recent_clawbacks=1), TIERED)
    assert isinstance(w2, Wait) and "clawback" in w2.reason
    f = fold(f, w)
    f = replace(f, receipts=(Receipt("r1", T0, (ReceiptLine("A", 1, Condition.as_described),)),))
    (r,) = evaluate(f, p)
    assert isinstance(r, RefundNow) and r.basis == RefundBasis.warehouse_receipt and r.amount == 4_000


def test_receipt_after_early_refund_with_missing_goods_flags_a_clawback():
    f = facts(first_moving_at=T0)
    f = fold(f, evaluate(f, TIERED)[0])
    f = replace(f, receipts=(Receipt("r1", T0, (ReceiptLine("A", 1, Condition.as_described),)),))
    actions = evaluate(f, TIERED)
    clawback = next(a for a in actions if isinstance(a, FlagClawback))
    assert clawback.amount == 4_000 and "A: 1 of 2" in clawback.reason
    assert not any(isinstance(a, RefundNow) for a in actions)


def test_damaged_goods_go_to_a_person_and_a_late_parcel_escalates_instead_of_rejecting():
    f = facts(receipts=(Receipt("r1", T0, (ReceiptLine("A", 2, Condition.damaged),)),))
    (w, e) = evaluate(f, TIERED)
    assert isinstance(w, Wait) and isinstance(e, Escalate) and e.amount == 8_000 and e.required_role == Role.manager
    late = replace(TIERED, return_window=timedelta(days=7))
    f = facts(first_moving_at=T0 + timedelta(days=10))
    (w,) = evaluate(f, late)
    assert isinstance(w, Wait)
    f = replace(fold(f, w), receipts=(Receipt("r1", T0, (ReceiptLine("A", 2, Condition.as_described),)),))
    (e,) = evaluate(f, late)
    assert isinstance(e, Escalate) and e.amount == 8_000


def test_authority_is_cumulative_per_return_and_the_role_is_the_callers():
    f = facts(kind=ReturnKind.refund_only, paid_total=8_000)
    amy = Actor("amy", Role.agent)
    o1 = decide_command(f, TIERED, amy, Command("1", "grant_free_refund", 1_500))
    assert o1.status == 200
    f = fold(f, o1.actions[0])
    o2 = decide_command(f, TIERED, amy, Command("2", "grant_free_refund", 1_000))
    assert o2.status == 202 and o2.required_role == Role.supervisor  # 25.00 in all is above an agent's 20.00
    f = fold(f, o2.actions[0])
    assert decide_command(f, TIERED, amy, Command("3", "approve")).status == 202
    assert decide_command(f, TIERED, amy, Command("3", "reject")).status == 403
    o4 = decide_command(f, TIERED, Actor("sam", Role.supervisor), Command("4", "approve"))
    assert o4.status == 200 and isinstance(o4.actions[0], RefundNow) and o4.actions[0].amount == 1_000
    assert decide_command(f, TIERED, None, Command("5", "approve")).status == 401
    assert decide_command(f, TIERED, amy, Command("6", "grant_free_refund", 0)).field == "amount"
    assert decide_command(f, TIERED, amy, Command("7", "grant_free_refund", 99_999)).status == 422


def test_an_exchange_converts_to_a_refund_once_through_the_actors_authority():
    lines = (Line("A", 1, 3_000),)
    f = facts(kind=ReturnKind.exchange, lines=lines, paid_total=3_000)
    amy, sam = Actor("amy", Role.agent), Actor("sam", Role.supervisor)
    assert decide_command(f, TIERED, amy, Command("1", "convert_to_refund")).status == 409  # goods not back yet
    f = replace(f, receipts=(Receipt("r1", T0, (ReceiptLine("A", 1, Condition.as_described),)),))
    o = decide_command(f, TIERED, amy, Command("2", "convert_to_refund"))  # 30.00 is above an agent's 20.00
    assert o.status == 202 and o.required_role == Role.supervisor
    (esc,) = o.actions
    assert isinstance(esc, Escalate) and esc.basis == RefundBasis.exchange_conversion and esc.amount == 3_000
    f = fold(f, esc)
    assert decide_command(f, TIERED, sam, Command("3", "convert_to_refund")).status == 409  # once
    done = decide_command(f, TIERED, sam, Command("4", "approve"))
    assert done.status == 200 and done.actions[0].basis == RefundBasis.exchange_conversion
    plain = facts(lines=lines, paid_total=3_000)
    assert decide_command(plain, TIERED, sam, Command("5", "convert_to_refund")).status == 409
    g = replace(facts(kind=ReturnKind.exchange, lines=lines, paid_total=3_000), receipts=f.receipts)
    assert decide_command(g, TIERED, sam, Command("6", "convert_to_refund", 3_001)).field == "amount"


def test_an_exchange_out_of_stock_waits_in_the_queue_until_converted_or_shipped():
    f = facts(kind=ReturnKind.exchange, lines=(Line("A", 1, 3_000),), paid_total=3_000, out_of_stock=True)
    (esc,) = evaluate(f, TIERED)
    assert isinstance(esc, Escalate) and esc.basis == RefundBasis.exchange_conversion
    assert (esc.amount, esc.required_role) == (3_000, Role.supervisor)
    f = fold(f, esc)
    assert evaluate(f, TIERED) == []  # asked once
    sam = Actor("sam", Role.supervisor)
    assert decide_command(f, TIERED, sam, Command("1", "convert_to_refund")).message.endswith("approve it")
    done = decide_command(f, TIERED, sam, Command("2", "approve"))
    assert done.status == 200 and done.actions[0].basis == RefundBasis.exchange_conversion
    (closed,) = evaluate(replace(f, replacement_shipped=True), TIERED)  # the stock came after all
    assert isinstance(closed, CloseEscalation) and closed.status == "superseded"


def test_customer_refund_only_request_waits_for_a_person_and_an_agent_filed_one_within_authority_pays():
    (e,) = evaluate(facts(kind=ReturnKind.refund_only, lines=(Line("A", 1, 1_590),)), TIERED)
    assert isinstance(e, Escalate) and e.required_role == Role.agent
    f = facts(kind=ReturnKind.refund_only, lines=(Line("A", 1, 1_590),), requester=Actor("amy", Role.agent))
    (r,) = evaluate(f, TIERED)
    assert isinstance(r, RefundNow) and r.basis == RefundBasis.refund_only and r.actor == Actor("amy", Role.agent)


def test_a_failed_refund_is_released_but_never_retried_automatically_for_the_same_cause():
    f = facts(first_moving_at=T0)
    f = fold(f, evaluate(f, TIERED)[0])
    f = replace(f, refunds=(replace(f.refunds[0], failed=True),))
    assert f.reserved == 0 and evaluate(f, TIERED) == []


def test_value_of_units_counts_cheapest_first_and_caps_at_requested():
    lines = (Line("A", 1, 900), Line("A", 1, 100), Line("B", 1, 50))
    assert value_of_units(lines, {"A": 1}) == 100
    assert value_of_units(lines, {"A": 5, "B": 1}) == 1_050


def test_owner_is_always_unlimited():
    assert Authority({"CNY": {Role.owner: 0}}).covers(Role.owner, "CNY", 10**12)
    assert Paid("x", 1, RefundBasis.early_scan).failed is False
