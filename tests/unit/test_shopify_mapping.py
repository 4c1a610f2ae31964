"""Shopify's returns webhooks, pure parts: the documented returns/request payload and its order (as the
Admin GraphQL API answers it) become the generic return body; ids, locales and phone numbers read the one
way; the cost bucket's wait; what returns/decline and returns/close do to a return; and notify skipping
the SMS of a customer without a phone."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.notify.rules import Pending, Rules, Situation, Suppress, decide
from services.returns.dev.shopify_admin import Customer, LineItem, Order, order_node
from services.returns.rules import (
    CANCELLED,
    IN_TRANSIT,
    REQUESTED,
    STATUS_BY_EVENT,
    AlreadyCancelled,
    Cancel,
    Unchanged,
    decide_shopify_topic,
)
from services.returns.schemas import (
    SHOPIFY_LOCALE,
    ReturnWebhook,
    e164_or_none,
    legacy_id,
    map_shopify,
    shopify_locale,
    shopify_return_ref,
)
from services.returns.shopify import order_from_graphql, throttle_wait
from tests.shopify import REQUEST


def order(customer: Customer | None = None, currency: str = "USD", **over: object) -> Order:
    return Order(
        id=450789469,
        name="#1001",
        currency=currency,
        total=str(over.get("total", "59.90")),
        customer=customer or Customer(id=207119551, phone="+14155550123", locale="en-CA"),
        line_items=[LineItem(id=466157049, sku="TEE-S", price=str(over.get("price", "19.95")))],
    )


def shopify_order(o: Order, timezone: str = "America/New_York"):
    node = order_node(o, 100, None)
    return order_from_graphql(node, {"ianaTimezone": timezone}, node["lineItems"]["nodes"])


def test_the_documented_payload_with_its_order_is_a_valid_return():
    body = map_shopify(REQUEST, shopify_order(order()), "maple")
    ret = ReturnWebhook.model_validate(body)
    assert (ret.platform_return_id, ret.order_id, ret.shop_id, ret.kind) == (
        "9001",
        "450789469",
        "maple",
        "return_and_refund",
    )
    assert (ret.currency, ret.paid_total, ret.payment_reference) == ("USD", 5990, "gid://shopify/Order/450789469")
    (line,) = ret.lines
    assert (line.sku, line.qty, line.unit_price, line.reason, line.note) == (
        "TEE-S",
        2,
        1995,
        "size_too_small",
        "A size up, please",
    )
    assert ret.customer.model_dump() == {
        "id": "207119551",
        "phone": "+14155550123",
        "locale": "en-CA",
        "timezone": "America/New_York",
    }


def test_the_shops_file_time_zone_wins_and_its_locale_is_the_default():
    no_locale = Customer(id=1, phone=None, locale=None)
    body = map_shopify(REQUEST, shopify_order(order(no_locale)), "maple", "zh-CN", "Asia/Shanghai")
    assert body["customer"]["locale"] == "zh-CN" and body["customer"]["timezone"] == "Asia/Shanghai"
    assert body["customer"]["phone"] is None
    assert ReturnWebhook.model_validate(body).customer.phone is None


def test_a_guest_checkout_and_an_exchange():
    node = order_node(order(), 100, None)
    node["customer"] = None
    guest = order_from_graphql(node, None, node["lineItems"]["nodes"])
    payload = copy.deepcopy(REQUEST)
    payload["exchange_line_items"] = [{"id": 1, "line_item": None}]
    body = map_shopify(payload, guest, "maple")
    assert body["customer"]["id"] == "guest-order-450789469" and body["kind"] == "exchange"
    assert body["customer"]["timezone"] == "UTC"


def test_zero_decimal_currencies_are_whole_units():
    o = shopify_order(order(currency="JPY", total="6000", price="3000"))
    assert (o.paid_total, o.lines["466157049"].unit_price) == (6000, 3000)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda p: (p.pop("id"), p.pop("admin_graphql_api_id")), "id"),
        (lambda p: p.update(id="x", admin_graphql_api_id="gid://shopify/Return/"), "id"),
        (lambda p: p.pop("order"), "order.id"),
        (lambda p: p.update(return_line_items=[]), "return_line_items"),
        (lambda p: p["return_line_items"][0].pop("fulfillment_line_item"), "return_line_items.0"),
        (
            lambda p: p["return_line_items"][0]["fulfillment_line_item"].update(line_item={"id": 5}),
            "return_line_items.0.fulfillment_line_item.line_item.id",
        ),
    ],
)
def test_what_is_missing_is_named(change, field):
    payload = copy.deepcopy(REQUEST)
    change(payload)
    with pytest.raises(ValueError, match=r"^" + field.replace(".", r"\.")):
        map_shopify(payload, shopify_order(order()), "maple")


def test_decline_and_close_name_the_return_without_an_order():
    ref = shopify_return_ref(
        {"admin_graphql_api_id": "gid://shopify/Return/77", "status": "declined"}, "returns/decline"
    )
    assert (ref.return_id, ref.order_gid, ref.status) == ("77", None, "declined")
    with pytest.raises(ValueError, match=r"^order\.id"):
        shopify_return_ref({"id": 77}, "returns/request")


@given(st.integers(min_value=1, max_value=2**63 - 1), st.sampled_from(["Order", "Return", "LineItem", "Customer"]))
def test_a_legacy_id_and_its_graphql_id_are_the_same_id(n, kind):
    assert legacy_id(n) == legacy_id(str(n)) == legacy_id(f"gid://shopify/{kind}/{n}") == str(n)


@given(st.one_of(st.none(), st.booleans(), st.integers(max_value=0), st.text(alphabet="abc/:-", max_size=20)))
def test_anything_else_is_no_id(value):
    assert legacy_id(value) is None


@given(st.lists(st.one_of(st.none(), st.text(max_size=20)), max_size=4))
def test_a_locale_is_always_one_the_return_accepts(candidates):
    assert SHOPIFY_LOCALE.match(shopify_locale(*candidates))


def test_locales_as_shopify_writes_them():
    assert shopify_locale("zh-CN") == "zh-CN"
    assert shopify_locale("zh-Hant-TW") == "zh"
    assert shopify_locale("pt_BR") == "pt-BR"
    assert shopify_locale(None, "", "es") == "es"
    assert shopify_locale("??", default="en") == "en"


@given(st.text(max_size=20))
def test_a_phone_is_e164_or_nothing(raw):
    got = e164_or_none(raw)
    assert got is None or (got.startswith("+") and got[1:].isdigit() and 8 <= len(got) <= 16)


def test_phones_as_shopify_keeps_them():
    assert e164_or_none("+1 415-555-0123") == "+14155550123"
    assert e164_or_none("4155550123") is None  # not E.164: no SMS rather than a guess at the country
    assert e164_or_none(None) is None


@given(
    st.floats(min_value=0, max_value=20_000),
    st.floats(min_value=1, max_value=1_000),
    st.floats(min_value=0, max_value=1_000),
)
def test_after_the_wait_the_bucket_pays_the_cost(available, restore_rate, cost):
    wait = throttle_wait(available, restore_rate, cost)
    assert wait >= 0
    assert (wait == 0) == (available >= cost)
    assert available + restore_rate * wait >= cost - 1e-6


def test_a_bucket_that_does_not_refill_never_pays():
    assert throttle_wait(0, 0, 10) == float("inf")


RECEIVED = STATUS_BY_EVENT["return.received"]
AWAITING_PARCEL = STATUS_BY_EVENT["return.tracking_registered"]


@pytest.mark.parametrize(
    ("topic", "status", "expected"),
    [
        ("returns/decline", REQUESTED, Cancel("why", by="shop")),
        ("returns/decline", IN_TRANSIT, Cancel("why", by="shop")),
        ("returns/decline", RECEIVED, Unchanged("received")),
        ("returns/decline", CANCELLED, AlreadyCancelled()),
        ("returns/close", REQUESTED, Cancel("why", by="shop")),
        ("returns/close", AWAITING_PARCEL, Cancel("why", by="shop")),
        ("returns/close", IN_TRANSIT, Unchanged("in_transit")),
        ("returns/close", RECEIVED, Unchanged("received")),
        ("returns/close", CANCELLED, AlreadyCancelled()),
    ],
)
def test_what_decline_and_close_do(topic, status, expected):
    assert decide_shopify_topic(topic, status, "why") == expected


@given(st.booleans(), st.booleans(), st.sampled_from(["requested", "reminder_1", "refund_paid"]))
def test_no_phone_is_never_sent(opted_out, closed, step):
    now = datetime(2026, 12, 2, 4, 0, tzinfo=UTC)  # noon in Shanghai
    s = Situation(now=now, has_phone=False, opted_out=opted_out, closed=closed)
    decision = decide(Pending(step, now, "Asia/Shanghai"), s, Rules())
    assert isinstance(decision, Suppress)
    assert decision.reason == ("return_cancelled" if closed else "no_phone")


@st.composite
def order_and_return(draw):
    """An order of distinct line items and a return of some of them (quantities and prices in cents)."""
    ids = draw(st.lists(st.integers(min_value=1, max_value=10**12), min_size=1, max_size=6, unique=True))
    prices = {i: draw(st.integers(min_value=0, max_value=10**6)) for i in ids}
    returned = draw(st.lists(st.sampled_from(ids), min_size=1, max_size=len(ids), unique=True))
    qty = {i: draw(st.integers(min_value=1, max_value=5)) for i in returned}
    total = sum(prices[i] * qty[i] for i in returned) + draw(st.integers(min_value=0, max_value=10**5))
    return ids, prices, returned, qty, total


@given(order_and_return(), st.sampled_from(["USD", "CNY", "EUR"]))
def test_every_returned_line_takes_its_price_from_the_order(case, currency):
    ids, prices, returned, qty, total = case
    o = order(currency=currency)
    o.line_items = [LineItem(id=i, sku=f"SKU-{i}", price=f"{prices[i] // 100}.{prices[i] % 100:02d}") for i in ids]
    o.total = f"{total // 100}.{total % 100:02d}"
    payload = copy.deepcopy(REQUEST)
    payload["return_line_items"] = [
        {
            "quantity": qty[i],
            "fulfillment_line_item": {"line_item": {"admin_graphql_api_id": f"gid://shopify/LineItem/{i}"}},
        }
        for i in returned
    ]
    ret = ReturnWebhook.model_validate(map_shopify(payload, shopify_order(o), "maple"))
    assert [(x.sku, x.qty, x.unit_price) for x in ret.lines] == [(f"SKU-{i}", qty[i], prices[i]) for i in returned]
    assert (ret.currency, ret.paid_total) == (currency, total)
