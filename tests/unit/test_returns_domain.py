"""Pure rules of the returns service."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from returnflow.http import field_errors
from returnflow.logging import mask_phone, redact_processor
from services.returns.domain import (
    STATUS_BY_EVENT,
    ReturnWebhook,
    can_cancel,
    format_money,
    status_after,
    to_minor_units,
)

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


@given(st.lists(st.sampled_from(sorted(STATUS_BY_EVENT)), min_size=1, max_size=12))
def test_status_is_order_independent(events):
    """Whatever order events arrive in, the highest-ranked status wins."""
    final = max((status_after(e, {}) for e in events), key=lambda s: s[1])  # type: ignore[return-value,arg-type]
    rank = 0
    status = None
    for e in events:
        s = status_after(e, {})
        assert s is not None
        if s[1] > rank:
            status, rank = s
    assert (status, rank) == final


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
    from services.returns.domain import top_movers

    moves = top_movers({"2026-10": before, "2026-11": after}, ["2026-10", "2026-11"], n=10)
    changes = [abs(m["change"]) for m in moves]
    assert changes == sorted(changes, reverse=True)
    assert {m["reason"] for m in moves} == set(before) | set(after)
    assert abs(sum(m["share_now"] for m in moves) - 1) < 0.01
    assert abs(sum(m["change"] for m in moves)) < 0.01  # shares move between reasons, never out of thin air


def test_analytics_payload_drops_contact_details():
    from services.returns.domain import analytics_payload

    data = {"customer": {"phone": "+8613812345678"}, "phone_masked": "+86*", "amount": 5, "basis": "early_scan"}
    assert analytics_payload(data) == {"amount": 5, "basis": "early_scan"}
