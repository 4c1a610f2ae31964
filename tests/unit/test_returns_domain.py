"""Pure rules of the returns service: webhook bodies, statuses, platform events, intake dedupe, timeline."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from returnflow.http import field_errors
from returnflow.logging import mask_phone, redact_processor
from services.returns.analytics import top_movers
from services.returns.rules import (
    CONVERSION_UNDER_REVIEW,
    CONVERTED_TO_REFUND,
    EXCHANGE_DELIVERED,
    EXCHANGE_SHIPPED,
    EXCHANGE_STATUS_BY_EVENT,
    REFUNDED,
    REJECTED,
    STATUS_BY_EVENT,
    AlreadyCancelled,
    Cancel,
    Intake,
    RegisterTracking,
    Status,
    TooLateToCancel,
    can_cancel,
    decide_return_event,
    intake_results,
    latest_statuses,
    new_return_candidates,
    status_after,
    status_of,
)
from services.returns.schemas import ReturnEventWebhook, ReturnWebhook, to_minor_units
from services.returns.timeline import analytics_payload, format_money, summarize

lines = st.lists(
    st.fixed_dictionaries(
        {
            "sku": st.text("ABCXYZ0123-", min_size=1, max_size=12),
            "qty": st.integers(1, 50),
            "unit_price": st.integers(0, 1_000_000),
            "reason": st.sampled_from(["damaged", "size"]),
        }
    ),
    min_size=1,
    max_size=5,
)


def body(ls, paid):
    return {
        "platform_return_id": "p",
        "order_id": "o",
        "shop_id": "s",
        "kind": "refund_only",
        "currency": "CNY",
        "paid_total": paid,
        "lines": ls,
        "customer": {"id": "c", "phone": "+8613812345678"},
        "requested_at": datetime.now(UTC).isoformat(),
    }


@given(ls=lines, extra=st.integers(0, 10_000))
def test_lines_within_paid_total_are_accepted(ls, extra):
    worth = sum(x["qty"] * x["unit_price"] for x in ls)
    assert ReturnWebhook.model_validate(body(ls, worth + extra)).paid_total == worth + extra


@given(ls=lines, short=st.integers(1, 10_000))
def test_lines_worth_more_than_paid_are_rejected_naming_lines(ls, short):
    worth = sum(x["qty"] * x["unit_price"] for x in ls)
    if worth == 0:
        return
    with pytest.raises(ValidationError) as exc:
        ReturnWebhook.model_validate(body(ls, max(0, worth - short)))
    assert [f["field"] for f in field_errors(exc.value)] == ["lines"]


KINDS = ["refund_only", "return_and_refund", "exchange"]
BASES = [None, "agent_authority", "refund_only", "early_scan", "warehouse_receipt", "exchange_conversion"]
EVENT_TYPES = (
    sorted(STATUS_BY_EVENT)
    + sorted(EXCHANGE_STATUS_BY_EVENT)
    + ["sms.sent", "inventory.verified", "exchange.replacement_released"]
)
lifecycle_events = st.tuples(
    st.sampled_from(EVENT_TYPES),
    st.fixed_dictionaries({"basis": st.sampled_from(BASES), "decision": st.sampled_from(["refund", "reject"])}),
)


@given(st.sampled_from(KINDS), st.lists(lifecycle_events, min_size=1, max_size=12), st.randoms())
def test_every_event_order_reaches_the_same_status(kind, events, rnd):
    """The status machine is a fold: any order, with duplicates, ends in the same status."""
    shuffled = events + rnd.sample(events, len(events))  # every event again, in another order
    rnd.shuffle(shuffled)
    assert status_of(kind, shuffled) == status_of(kind, events)


def test_every_status_name_has_one_rank():
    statuses = [*STATUS_BY_EVENT.values(), *EXCHANGE_STATUS_BY_EVENT.values(), REJECTED]
    statuses += [CONVERTED_TO_REFUND, CONVERSION_UNDER_REVIEW]
    assert len({s.name for s in statuses}) == len({s.rank for s in statuses}) == len(set(statuses))


def test_a_goodwill_grant_on_an_exchange_does_not_make_it_refunded():
    """The demo's exchange read `refunded` after a 10.00 goodwill grant (issue 16)."""
    goodwill = {"basis": "agent_authority", "decision": "refund", "amount": 1000}
    events = [("return.requested", {}), ("parcel.scanned", {}), ("return.received", {})]
    events += [("refund.decided", goodwill), ("refund.issued", goodwill)]
    assert status_of("exchange", events) == STATUS_BY_EVENT["return.received"]
    assert status_of("exchange", [*events, ("refund.decided", {**goodwill, "decision": "reject"})]).name == "received"
    assert status_of("return_and_refund", events) == REFUNDED  # a refund on a return is its refund


def test_an_exchange_ends_with_the_replacement_delivered_or_a_conversion_paid():
    shipped = [("return.requested", {}), ("return.received", {}), ("exchange.replacement_shipped", {})]
    assert status_of("exchange", shipped) == EXCHANGE_SHIPPED
    assert status_of("exchange", [("exchange.replacement_delivered", {}), *shipped]) == EXCHANGE_DELIVERED
    conversion = {"basis": "exchange_conversion", "decision": "refund"}
    stockless = [("return.received", {}), ("exchange.out_of_stock", {})]
    assert status_of("exchange", stockless).name == "awaiting_stock"
    assert status_of("exchange", [*stockless, ("refund.escalated", conversion)]).name == "conversion_under_review"
    assert status_of("exchange", [*stockless, ("refund.decided", conversion)]) == CONVERTED_TO_REFUND
    assert status_of("exchange", [("refund.issued", conversion), *stockless]) == REFUNDED
    assert status_of("exchange", [*stockless, ("return.cancelled", {})]).name == "cancelled"


def test_cancel_only_before_goods_arrive():
    assert can_cancel(STATUS_BY_EVENT["parcel.scanned"][1])
    assert not can_cancel(STATUS_BY_EVENT["return.received"][1])
    assert not can_cancel(STATUS_BY_EVENT["refund.issued"][1])


@given(st.integers(0, 10**12))
def test_money_round_trips(minor):
    text = format_money(minor, "CNY").split()[1]
    assert to_minor_units(text, "CNY") == minor
    assert to_minor_units(format_money(minor, "JPY").split()[1], "JPY") == minor


def test_too_many_decimals_refused():
    with pytest.raises(ValueError):
        to_minor_units("1.234", "USD")


@given(st.from_regex(r"\+[1-9]\d{6,14}", fullmatch=True))
def test_phone_numbers_never_reach_logs(phone):
    masked = mask_phone(phone)
    assert masked != phone and masked[-2:] == phone[-2:] and len(masked) == len(phone)
    event = redact_processor(
        None, "info", {"event": f"sending to {phone}", "phone": phone, "nested": {"to": phone}, "api_secret": "s3cr3t"}
    )
    assert phone not in str(event) and "s3cr3t" not in str(event)


month_counts = st.dictionaries(st.sampled_from(["damaged", "size", "late", "other"]), st.integers(1, 100), min_size=1)


@given(before=month_counts, after=month_counts)
def test_top_movers_are_the_largest_share_changes(before, after):
    moves = top_movers({"2026-10": before, "2026-11": after}, ["2026-10", "2026-11"], n=10)
    changes = [abs(m["change"]) for m in moves]
    assert changes == sorted(changes, reverse=True)
    assert {m["reason"] for m in moves} == set(before) | set(after)
    assert abs(sum(m["share_now"] for m in moves) - 1) < 0.01
    assert abs(sum(m["change"] for m in moves)) < 0.01  # shares move between reasons, never out of thin air


def test_analytics_payload_drops_contact_details():
    data = {"customer": {"phone": "+8613812345678"}, "phone_masked": "+86*", "amount": 5, "basis": "early_scan"}
    assert analytics_payload(data) == {"amount": 5, "basis": "early_scan"}


@given(st.lists(st.tuples(st.sampled_from(["r1", "r2"]), lifecycle_events), max_size=12))
def test_latest_statuses_fold_each_return_on_its_own_in_any_order(events):
    ids = {"r1": uuid.UUID(int=1), "r2": uuid.UUID(int=2)}
    kinds = {"r1": "exchange", "r2": "return_and_refund"}
    got = latest_statuses((ids[r], kinds[r], t, d) for r, (t, d) in events)
    assert got == latest_statuses((ids[r], kinds[r], t, d) for r, (t, d) in reversed(events))
    for r, rid in ids.items():
        assert got.get(rid) == status_of(kinds[r], [e for x, e in events if x == r])


def test_a_rejected_refund_is_its_own_status():
    assert status_after("refund.decided", {"decision": "reject"}) == Status("rejected", 45)
    assert status_after("refund.decided", {"decision": "approve"}) == STATUS_BY_EVENT["refund.decided"]
    assert status_after("sms.sent", {}) is None


def test_platform_events_register_tracking_always_and_cancel_only_before_receipt():
    tracking = ReturnEventWebhook(shop_id="s", type="tracking_registered", tracking_no="SF1", carrier="sf")
    cancel = ReturnEventWebhook(shop_id="s", type="cancelled", reason="changed my mind")
    received = STATUS_BY_EVENT["return.received"]
    assert decide_return_event(received, tracking) == RegisterTracking("SF1", "sf")
    assert decide_return_event(STATUS_BY_EVENT["parcel.scanned"], cancel) == Cancel("changed my mind")
    assert decide_return_event(STATUS_BY_EVENT["return.cancelled"], cancel) == AlreadyCancelled()
    assert decide_return_event(received, cancel) == TooLateToCancel("received")


def intake(delivery: str, platform_return_id: str) -> Intake:
    b = ReturnWebhook.model_validate({**body([{"sku": "A", "qty": 1, "unit_price": 1, "reason": "size"}], 1)})
    b = b.model_copy(update={"platform_return_id": platform_return_id})
    return Intake("generic", delivery, "generic", b, "c")


@given(
    st.lists(st.tuples(st.sampled_from("abcd"), st.sampled_from("xyz")), min_size=1, max_size=10),
    st.sets(st.sampled_from("abcd")),
)
def test_intake_creates_each_new_return_once_and_answers_every_webhook(webhooks, seen_before):
    """Deliveries seen before name their return; of the rest, the first webhook of a platform return
    creates it and every other one is a duplicate naming the same return."""
    items = [intake(d, p) for d, p in webhooks]
    known = {("generic", d): uuid.UUID(int=ord(d)) for d in seen_before}
    candidates = new_return_candidates(items, known)
    return_of = {k: rid for k, (rid, _) in candidates.items()}
    results, deliveries = intake_results(items, known, return_of, set(return_of.values()))
    assert len(results) == len(items)
    assert sorted(r.return_id for r in results if r.created) == sorted(return_of.values())
    for it, r in zip(items, results, strict=True):
        assert r.return_id == known.get(it.delivery, return_of.get(it.platform_key))
        assert r.status == "requested"
    assert [(s, d) for s, d, _ in deliveries] == [it.delivery for it in items if it.delivery not in known]


def test_every_lifecycle_event_reads_as_a_sentence_on_the_timeline():
    assert summarize("parcel.scanned", {"scan_code": "picked_up", "location": "Hangzhou", "first_moving": True}) == (
        "Courier scan: picked_up at Hangzhou — parcel is on its way"
    )
    assert summarize("refund.escalated", {"amount": 4000, "currency": "CNY", "required_role": "owner"}) == (
        "Refund of CNY 40.00 needs an owner's approval"
    )
    assert summarize("return.cancelled", {}) == "Return cancelled by customer"
    assert summarize("exchange.replacement_released", {"basis": "first_moving_scan"}) == (
        "Replacement released at the first moving scan: it ships before the goods are back"
    )
    assert summarize("something.new", {}) == "something.new"
