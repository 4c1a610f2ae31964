"""Searching returns (issue 15) — `services.returns.rules.return_search`: at least one filter, the phone
matched after normalising it to E.164, values trimmed."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.returns.rules import RETURN_STATUSES, SEARCH_FIELDS, ReturnSearch, return_search

blank = st.sampled_from([None, "", "  ", "\n"])
mobile = st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True)


def test_no_filter_names_every_field_it_could_have_been():
    errors = return_search(None, " ", "", None)
    assert isinstance(errors, list) and [e["field"] for e in errors] == list(SEARCH_FIELDS)


@given(national=mobile, style=st.sampled_from(["+86{n}", "+86 {a}-{b}-{c}", "0086{n}", "{n}", " 86{n} "]))
def test_a_phone_as_people_type_it_is_searched_as_e164(national, style):
    typed = style.format(n=national, a=national[:3], b=national[3:7], c=national[7:])
    q = return_search(None, typed, None, None)
    assert q == ReturnSearch(phone=f"+86{national}")


@given(order=st.none() | st.text(min_size=1, max_size=20), tracking=blank | st.text(max_size=20))
def test_values_are_trimmed_and_blank_ones_are_no_filter(order, tracking):
    q = return_search(order, None, tracking, "requested")
    assert isinstance(q, ReturnSearch) and q.status == "requested"
    assert q.order_id == ((order or "").strip() or None) and q.tracking_number == ((tracking or "").strip() or None)


def test_a_phone_that_is_no_number_is_refused_naming_it():
    assert return_search("o-1", "call me", None, None) == [
        {"field": "phone", "message": "not a phone number (E.164, e.g. +8613812345678)"}
    ]
    assert "refund_failed" in RETURN_STATUSES and "rejected" in RETURN_STATUSES
