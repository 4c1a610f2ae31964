"""The customer's page, pure parts: links (returnflow/links.py), the progress line, the next thing to
do, link expiry and revocation, the tracking form's rate limit and validation, and the page's words."""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta
from uuid import uuid4

from hypothesis import given
from hypothesis import strategies as st

from returnflow.links import customer_link, is_token_shaped, link_token, token_digest
from services.returns import rules
from services.returns.page_text import TEXT
from services.returns.rules import Fact

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
uuids = st.uuids()
moments = st.integers(min_value=0, max_value=400 * 86_400).map(lambda s: T0 + timedelta(seconds=s))


# -- links -------------------------------------------------------------------------------------------


@given(uuids, uuids)
def test_a_token_names_one_return_and_is_short(a, b):
    ta, tb = link_token(b"secret", a), link_token(b"secret", b)
    assert is_token_shaped(ta) and len(ta) == 22
    assert (ta == tb) == (a == b)
    assert link_token(b"other", a) != ta  # another secret, another token
    assert str(a).replace("-", "") not in ta  # the return id is not in the link


def test_the_link_needs_a_base_url_and_a_secret():
    rid = uuid4()
    assert customer_link(None, b"s", rid) is None
    assert customer_link("https://x.example/", None, rid) is None
    assert customer_link("https://x.example/", b"s", rid) == f"https://x.example/r/{link_token(b's', rid)}"
    assert token_digest("a") != token_digest("b")


@given(st.text(alphabet=string.printable, max_size=40))
def test_only_token_shaped_text_is_looked_up(text):
    assert is_token_shaped(text) == (len(text) == 22 and all(c.isalnum() or c in "-_" for c in text))


# -- progress ----------------------------------------------------------------------------------------


def fact(type_: str, minutes: int, **data) -> Fact:
    return Fact(type_, T0 + timedelta(minutes=minutes), data)


REQUESTED = fact("return.requested", 0)
MOVING = fact("parcel.scanned", 10, scan_code="picked_up", first_moving=True)
RECEIVED = fact("return.received", 20)
CHECKED = fact("refund.decided", 30, decision="refund", basis="warehouse_receipt", amount=4000, currency="CNY")
PAID = fact("refund.issued", 40, amount=4000, currency="CNY", basis="warehouse_receipt")


@given(st.permutations([REQUESTED, MOVING, RECEIVED, CHECKED, PAID]), st.integers(min_value=0, max_value=5))
def test_steps_are_the_same_whatever_order_events_arrive_in(events, n):
    seen = events[:n]
    p = rules.progress("return_and_refund", seen)
    assert [s.key for s in p.steps] == ["requested", "on_its_way", "received", "checked", "refund_paid"]
    for s in p.steps:
        expected = [f.at for f in seen if rules.is_step_event(s.key, f)]
        assert s.at == (min(expected) if expected else None)
    assert (p.closed_at is not None) == (n == 5)


def test_the_next_thing_to_do_follows_the_return():
    def action(kind, *facts):
        return rules.next_action(kind, rules.progress(kind, facts))

    assert action("return_and_refund", REQUESTED) == "ship"
    assert action("return_and_refund", REQUESTED, fact("parcel.scanned", 5, scan_code="accepted")) == "ship"
    assert action("return_and_refund", REQUESTED, MOVING) == "wait_parcel"
    assert action("return_and_refund", REQUESTED, MOVING, RECEIVED) == "checking"
    assert action("return_and_refund", REQUESTED, MOVING, PAID) == "refund_paid"  # early refund on the scan
    assert action("refund_only", REQUESTED) == "nothing_to_send"
    escalated = fact("refund.escalated", 5, amount=9000, currency="CNY", required_role="manager")
    assert action("refund_only", REQUESTED, escalated) == "under_review"
    assert action("refund_only", REQUESTED, escalated, PAID) == "refund_paid"
    assert action("exchange", REQUESTED, MOVING, RECEIVED, fact("inventory.verified", 50)) == "exchange_checked"
    assert action("return_and_refund", REQUESTED, fact("return.cancelled", 3)) == "cancelled"
    assert action("return_and_refund", REQUESTED, RECEIVED, fact("refund.decided", 33, decision="reject")) == "rejected"


SHIPPED = fact("exchange.replacement_shipped", 60, carrier="sf", tracking_no="SFOUT1")
DELIVERED = fact("exchange.replacement_delivered", 90, carrier="sf", tracking_no="SFOUT1")
OUT_OF_STOCK = fact("exchange.out_of_stock", 55)
CONVERTED = fact("refund.decided", 70, decision="refund", basis="exchange_conversion", amount=4000, currency="CNY")
GOODWILL = fact("refund.issued", 35, amount=1000, currency="CNY", basis="agent_authority")


@given(st.permutations([REQUESTED, MOVING, RECEIVED, SHIPPED, DELIVERED, GOODWILL]), st.integers(0, 6))
def test_an_exchange_ends_when_its_replacement_is_delivered_in_any_order(events, n):
    seen = events[:n]
    p = rules.progress("exchange", seen)
    assert [s.key for s in p.steps] == [
        "requested",
        "on_its_way",
        "received",
        "replacement_shipped",
        "replacement_delivered",
    ]
    assert (p.closed_at is not None) == (DELIVERED in seen and all(e in seen for e in events if e is not GOODWILL))


def test_an_exchange_tells_where_its_replacement_is():
    def action(*facts):
        return rules.next_action("exchange", rules.progress("exchange", facts))

    declined = fact("refund.decided", 36, decision="reject", actor_id="sam")
    assert action(REQUESTED, MOVING, RECEIVED, GOODWILL, declined) == "checking"  # goodwill is beside it
    assert action(REQUESTED, MOVING, RECEIVED, OUT_OF_STOCK) == "replacement_delayed"
    assert action(REQUESTED, MOVING, RECEIVED, OUT_OF_STOCK, SHIPPED) == "replacement_on_its_way"
    assert action(REQUESTED, MOVING, RECEIVED, SHIPPED, DELIVERED) == "exchange_delivered"
    released = fact("exchange.replacement_released", 21, basis="first_moving_scan")
    assert action(REQUESTED, MOVING, released) == "replacement_released"  # sent without waiting for the goods
    assert action(REQUESTED, MOVING, released, SHIPPED) == "replacement_on_its_way"
    converted = rules.progress("exchange", [REQUESTED, MOVING, RECEIVED, OUT_OF_STOCK, CONVERTED])
    assert [s.key for s in converted.steps][-2:] == ["refund_instead", "refund_paid"]
    assert rules.next_action("exchange", converted) == "refund_instead"
    assert converted.refund == rules.Refund(4000, "CNY", False)
    paid = fact("refund.issued", 80, amount=4000, currency="CNY", basis="exchange_conversion")
    done = rules.progress("exchange", [REQUESTED, MOVING, RECEIVED, CONVERTED, paid])
    assert rules.next_action("exchange", done) == "refund_paid" and done.closed_at == paid.at


@given(st.permutations([REQUESTED, MOVING, RECEIVED, OUT_OF_STOCK, SHIPPED, DELIVERED]), st.integers(0, 6))
def test_an_exchange_shows_its_outgoing_parcel_once_it_shipped(events, n):
    seen = events[:n]
    p = rules.progress("exchange", seen)
    assert p.replacement == (rules.Parcel("sf", "SFOUT1") if SHIPPED in seen else None)
    assert rules.progress("return_and_refund", seen).replacement is None  # only an exchange sends one


def test_a_shipment_entry_without_a_parcel_shows_none():
    assert rules.replacement_parcel([fact("exchange.replacement_shipped", 60, carrier="sf")]) is None
    later = fact("exchange.replacement_shipped", 90, carrier="yto", tracking_no="YT2")
    assert rules.replacement_parcel([later, SHIPPED]) == rules.Parcel("sf", "SFOUT1")  # the first one


def test_tracking_may_be_entered_only_while_a_parcel_is_expected_and_none_is_known():
    p = rules.progress("return_and_refund", [REQUESTED])
    assert rules.can_register_tracking("return_and_refund", p, None)
    assert not rules.can_register_tracking("return_and_refund", p, "SF123")
    assert not rules.can_register_tracking("refund_only", rules.progress("refund_only", [REQUESTED]), None)
    moving = rules.progress("return_and_refund", [REQUESTED, MOVING])
    assert not rules.can_register_tracking("return_and_refund", moving, None)


def test_the_refund_shown_is_what_was_paid_else_what_was_approved():
    assert rules.refund_of([REQUESTED]) is None
    assert rules.refund_of([REQUESTED, CHECKED]) == rules.Refund(4000, "CNY", False)
    assert rules.refund_of([REQUESTED, CHECKED, PAID, PAID._replace(at=T0)]) == rules.Refund(8000, "CNY", True)


# -- link expiry and revocation ------------------------------------------------------------------------


@given(moments, st.none() | moments, st.none() | moments, st.integers(min_value=0, max_value=200))
def test_a_link_works_until_revoked_or_ttl_after_its_return_closed(now, revoked_at, closed_at, days):
    ttl = timedelta(days=days)
    state = rules.link_state(now, revoked_at, closed_at, ttl)
    if revoked_at is not None and revoked_at <= now:
        assert state == "revoked"
    elif closed_at is not None and now >= closed_at + ttl:
        assert state == "expired"
    else:
        assert state == "valid"
    if closed_at is None and revoked_at is None:
        assert state == "valid"  # an open return's link never expires


# -- rate limit ------------------------------------------------------------------------------------------


@given(st.lists(moments, max_size=12), moments, st.integers(min_value=1, max_value=6))
def test_rate_limit_allows_limit_attempts_per_window(attempts, now, limit):
    window = timedelta(hours=1)
    wait = rules.retry_after(attempts, now, limit, window)
    recent = [a for a in attempts if now - window < a <= now]
    assert (wait is None) == (len(recent) < limit)
    if wait is not None:
        later = now + timedelta(seconds=wait)
        assert rules.retry_after(attempts, later, limit, window) is None or wait > 0


# -- the tracking form ------------------------------------------------------------------------------------


def test_tracking_numbers_are_cleaned_and_checked():
    assert rules.parse_tracking("sf", " sf 1234-5678 9012 ") == rules.TrackingEntry("sf", "SF123456789012")
    assert rules.parse_tracking("", "SF123456789012") == {"carrier": "carrier_required"}
    assert rules.parse_tracking("sf", "") == {"tracking_no": "tracking_required"}
    assert rules.parse_tracking("sf", "<script>") == {"tracking_no": "tracking_invalid"}
    assert rules.parse_tracking("nope", "12") == {"carrier": "carrier_required", "tracking_no": "tracking_invalid"}


@given(st.text(max_size=60))
def test_an_accepted_tracking_number_is_letters_and_digits(text):
    out = rules.parse_tracking("sf", text)
    if isinstance(out, rules.TrackingEntry):
        assert out.tracking_no.isascii() and out.tracking_no.isalnum() and 6 <= len(out.tracking_no) <= 40


def test_every_locale_has_every_word():
    keys = set(TEXT["en"])
    for locale, words in TEXT.items():
        assert set(words) == keys, locale
    needed = {f"next.{a}" for a in rules.NextAction.__args__} | {
        f"step.{s}" for plan in rules.STEP_PLANS.values() for s in plan
    }
    assert needed <= keys
