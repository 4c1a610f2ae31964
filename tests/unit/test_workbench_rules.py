"""The workbench's pure parts: who may do what, a typed amount, a person's authority left, the queue's
order, filters, counts and cursor pages, the receiving form read line by line, the sealed session token,
and the pages' words (both languages have every key)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st

from services.workbench import rules
from services.workbench.handlers import seal, unseal
from services.workbench.page_text import LOCALES, ROLE_NAMES, TEXT
from services.workbench.rules import QueueFilter, QueueItem

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


# -- roles ---------------------------------------------------------------------------------------------
def test_each_action_is_for_its_roles_only():
    assert all(rules.may(r, "decide") for r in rules.DECIDERS)
    assert not rules.may("warehouse", "decide") and not rules.may("returns_team", "decide")
    assert rules.may("returns_team", "check") and not rules.may("agent", "check")
    assert rules.may("warehouse", "receive") and not any(rules.may(r, "receive") for r in rules.DECIDERS)
    assert not rules.may("warehouse", "queue")
    assert rules.may("warehouse", "ship") and not any(rules.may(r, "ship") for r in (*rules.DECIDERS, "returns_team"))
    assert rules.may("warehouse", "return")  # the return page: where the replacement is shipped
    assert not rules.may("agent", "no-such-action") and not rules.may("intruder", "queue")


@given(st.sampled_from(rules.ROLES))
def test_a_person_lands_on_a_page_their_role_may_open(role):
    page = rules.home_of(role).strip("/")
    assert rules.may(role, page)


# -- amounts -------------------------------------------------------------------------------------------
@given(st.integers(min_value=1, max_value=10**12))
def test_an_amount_typed_as_the_page_shows_it_is_exact(minor):
    assert rules.parse_amount(f"{minor // 100}.{minor % 100:02d}") == minor
    assert rules.parse_amount(f" {minor // 100},{minor % 100:02d} ") == minor
    if minor % 100 == 0:
        assert rules.parse_amount(str(minor // 100)) == minor


@pytest.mark.parametrize("text", ["", "abc", "-5", "0", "0.00", "1.234", "1e3", "¥", "1.2.3"])
def test_a_bad_amount_says_why(text):
    with pytest.raises(ValueError):
        rules.parse_amount(text)


# -- authority -----------------------------------------------------------------------------------------
def test_authority_counts_what_people_granted_not_the_policy_or_failures():
    refunds = [
        {"amount": 1500, "actor_id": "agent-amy", "status": "issued"},
        {"amount": 700, "actor_id": "agent-bo", "status": "failed"},
        {"amount": 4000, "actor_id": None, "status": "issued"},  # early refund: the policy's
        {"amount": 300, "actor_id": "sup-sam", "status": "pending"},
    ]
    assert rules.granted_by_people(refunds) == 1800
    a = rules.Authority(rules.limit_for({"*": 2000}, "CNY"), 1800)
    assert (a.limit, a.left) == (2000, 200)
    assert rules.Authority(rules.limit_for({"CNY": 5000, "*": 100}, "CNY"), 6000).left == 0
    assert rules.Authority(rules.limit_for({"CNY": None}, "CNY"), 6000).left is None
    assert rules.limit_for({}, "USD") == 0


# -- the queue -----------------------------------------------------------------------------------------
items = st.lists(
    st.builds(
        QueueItem,
        kind=st.sampled_from(rules.KINDS),
        item_id=st.text("abcdef0123", min_size=1, max_size=6),
        created_at=st.integers(0, 20).map(lambda m: NOW - timedelta(hours=m)),
        return_id=st.none(),
        role_needed=st.sampled_from([None, "agent", "supervisor", "manager"]),
        amount=st.one_of(st.none(), st.integers(1, 10_000)),
        currency=st.just("CNY"),
        shop=st.sampled_from([None, "shop-1", "shop-2"]),
    ),
    max_size=40,
    unique_by=lambda i: (i.kind, i.item_id),
)
filters = st.builds(
    QueueFilter,
    kind=st.sampled_from([None, *rules.KINDS]),
    shop=st.sampled_from([None, "shop-1"]),
    role=st.sampled_from([None, "supervisor"]),
    min_age_s=st.sampled_from([None, 3600.0 * 5]),
    min_amount=st.sampled_from([None, 5000]),
)


@given(items, filters, st.integers(1, 7))
def test_paging_by_cursor_gives_every_kept_item_once_oldest_first(all_items, f, size):
    seen: list[QueueItem] = []
    cursor = None
    for _ in range(100):
        page = rules.queue_page(all_items, f, NOW, cursor, size)
        assert len(page.items) <= size
        seen += page.items
        cursor = page.next_cursor
        if cursor is None:
            break
    kept = [i for i in all_items if f.keeps(i, NOW)]
    assert sorted(seen, key=lambda i: i.key) == seen  # oldest first
    assert sorted(seen, key=lambda i: i.key) == sorted(kept, key=lambda i: i.key)  # each once, none lost
    first = rules.queue_page(all_items, f, NOW, None, size)
    assert sum(first.counts.values()) == first.total
    assert (first.counts.get(f.kind, 0) if f.kind else first.total) == len(kept)


def test_a_cursor_from_elsewhere_is_refused():
    with pytest.raises(ValueError):
        rules.decode_cursor("not-a-cursor")
    with pytest.raises(ValueError):
        rules.decode_cursor(rules.encode_cursor(("a", "b", "c"))[:-3] + "!!!")


def test_filters_keep_what_they_say():
    old = QueueItem("escalation", "e1", NOW - timedelta(hours=30), "r", "supervisor", 3000, "CNY", "shop-1")
    new = QueueItem("clawback", "c1", NOW - timedelta(minutes=5), "r", None, 9000, "CNY", "shop-2")
    assert QueueFilter(min_age_s=86_400).keeps(old, NOW) and not QueueFilter(min_age_s=86_400).keeps(new, NOW)
    assert QueueFilter(shop="shop-2").keeps(new, NOW) and not QueueFilter(shop="shop-2").keeps(old, NOW)
    assert QueueFilter(role="supervisor").keeps(old, NOW) and not QueueFilter(role="supervisor").keeps(new, NOW)
    assert QueueFilter(min_amount=5000).keeps(new, NOW) and not QueueFilter(min_amount=5000).keeps(old, NOW)
    page = rules.queue_page([new, old], QueueFilter(kind="clawback"), NOW, None, 10)
    assert page.items == [new] and page.counts == {"clawback": 1, "escalation": 1}


# -- the receiving form --------------------------------------------------------------------------------
EXPECTED = [{"sku": "SERUM-30ML", "qty": 2}, {"sku": "CREAM-50ML", "qty": 1}]


def test_a_receipt_form_becomes_lines():
    form = {
        "qty_0": "2",
        "condition_0": "as_described",
        "disposition_0": "destroy",
        "qty_1": "0",
        "condition_1": "missing",
    }
    read = rules.read_receipt_form(form, EXPECTED)
    assert read.errors == {}
    assert read.lines == [
        {"sku": "SERUM-30ML", "qty_received": 2, "condition": "as_described", "disposition": "destroy"},
        {"sku": "CREAM-50ML", "qty_received": 0, "condition": "missing"},
    ]


@given(st.one_of(st.text(max_size=4), st.integers(0, 5).map(str)), st.sampled_from(["", "bogus", *rules.DISPOSITIONS]))
def test_each_error_is_named_by_its_field(qty, disposition):
    form = {"qty_0": qty, "condition_0": "damaged", "disposition_0": disposition, "qty_1": "1", "condition_1": "x"}
    read = rules.read_receipt_form(form, EXPECTED)
    assert read.errors["condition_1"] == "choose a condition"
    q = qty.strip()
    if not rules.is_count(q):
        assert "qty_0" in read.errors
    elif int(q) > 2:
        assert read.errors["qty_0"] == "at most 2 expected"
    elif int(q) > 0 and disposition not in rules.DISPOSITIONS:
        assert "disposition_0" in read.errors
    else:
        assert set(read.errors) == {"condition_1"}


# -- the session's sealed token ------------------------------------------------------------------------
def test_a_sealed_token_opens_only_for_its_person_and_key():
    sealer = AESGCM(b"k" * 32)
    sealed = seal(sealer, "dev-token-agent-amy", "agent-amy")
    assert b"dev-token" not in sealed
    assert unseal(sealer, sealed, "agent-amy") == "dev-token-agent-amy"
    with pytest.raises(InvalidTag):
        unseal(sealer, sealed, "agent-bo")
    with pytest.raises(InvalidTag):
        unseal(AESGCM(b"j" * 32), sealed, "agent-amy")


def test_both_languages_have_every_word():
    assert set(LOCALES) == set(TEXT) == set(ROLE_NAMES)
    assert set(TEXT["en"]) == set(TEXT["zh-CN"])
    assert set(ROLE_NAMES["en"]) == set(ROLE_NAMES["zh-CN"]) == set(rules.ROLES)


# -- an exchange's replacement -----------------------------------------------------------------------------
def test_the_replacement_is_due_once_an_exchange_is_received_and_until_it_shipped():
    received = {"kind": "exchange", "receipt": {"receipt_id": "r1"}, "replacement": None}
    assert rules.replacement_due(received)
    assert not rules.replacement_due(received | {"replacement": {"shipment_id": "s1"}})
    assert not rules.replacement_due(received | {"receipt": None})
    assert not rules.replacement_due(received | {"kind": "return_and_refund"})
    assert not rules.replacement_due(None)


def test_the_form_offers_the_replacement_sku_else_the_same():
    lines = [{"sku": "SHOE-41", "qty": 1, "replacement_sku": "SHOE-42"}, {"sku": "SOCK", "qty": 2}]
    assert rules.replacement_lines(lines) == [{"sku": "SHOE-42", "qty": 1}, {"sku": "SOCK", "qty": 2}]


skus = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=64)


@given(st.lists(st.tuples(skus, st.integers(1, 10_000)), min_size=1, max_size=5), st.sampled_from(["sf", "yto", "jd"]))
def test_a_good_replacement_form_reads_as_typed(lines, carrier):
    form = {f"sku_{i}": f" {sku} " for i, (sku, _) in enumerate(lines)}
    form |= {f"qty_{i}": str(qty) for i, (_, qty) in enumerate(lines)}
    form |= {"carrier": carrier.upper(), "tracking_no": " sf 1234 5678 "}
    read = rules.read_replacement_form(form, len(lines))
    assert read.errors == {}
    assert read.lines == [{"sku": sku, "qty": qty} for sku, qty in lines]
    assert (read.carrier, read.tracking_no) == (carrier, "SF12345678")


@given(st.sampled_from(["", "0", "-1", "10001", "1.5", "²", "x"]), st.sampled_from(["", "S F", "顺丰"]))
def test_a_bad_replacement_form_names_each_bad_field(qty, carrier):
    form = {"sku_0": "SHOE-42", "qty_0": qty, "sku_1": "  ", "qty_1": "1", "carrier": carrier, "tracking_no": "AB1"}
    read = rules.read_replacement_form(form, 2)
    assert set(read.errors) == {"qty_0", "sku_1", "carrier", "tracking_no"}
    assert read.lines == []


@given(st.integers(0, 999), st.sampled_from(["sku", "qty"]))
def test_a_warehouse_refusal_lands_next_to_its_form_field(i, part):
    assert rules.replacement_form_field(f"lines.{i}.{part}") == f"{part}_{i}"
    errors = rules.replacement_errors({f"lines.{i}.{part}": "not asked for", "tracking_no": "in use"}, "no")
    assert errors == {f"{part}_{i}": "not asked for", "tracking_no": "in use"}


@given(st.text(max_size=20))
def test_a_refusal_field_the_form_lacks_is_shown_above_it(name):
    key = rules.replacement_form_field(name)
    assert key in ("carrier", "tracking_no", "form") or key.split("_")[0] in ("sku", "qty")
    assert rules.replacement_errors({}, "goods not received yet") == {"form": "goods not received yet"}
    assert rules.replacement_errors({"lines": "also SOCK", "shipped_at": "bad"}, "x") == {"form": "also SOCK; bad"}
