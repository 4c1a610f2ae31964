"""A shop's refund policy (services/refunds/rules.py shop_policy): each key the shops file gives for the
shop (its refunds, and whether its exchanges ship at the first scan) replaces the environment's, every key
it leaves out keeps the environment's."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st

from returnflow.shops import Authority, EarlyRefund, Exchanges, Refunds, Shop
from services.refunds.rules import Policy, authority_from, shop_policy

DEFAULT = Policy(
    authority=authority_from("tiered", {}),
    early_refund=True,
    early_refund_cap={"CNY": 50_000},
    early_refund_max_clawbacks=0,
    return_window=None,
    replacement_at_first_scan=False,
)

caps = st.none() | st.dictionaries(st.sampled_from(["CNY", "USD", "JPY"]), st.integers(0, 10**7), max_size=3)
early = st.none() | st.builds(
    EarlyRefund, enabled=st.none() | st.booleans(), cap=caps, max_clawbacks=st.none() | st.integers(0, 5)
)
authority = st.none() | st.sampled_from([Authority(preset="full_trust"), Authority(preset="tiered")])
refunds = st.builds(
    Refunds, early_refund=early, authority=authority, return_window_days=st.none() | st.integers(1, 365)
)
exchanges = st.builds(Exchanges, ship_at_first_scan=st.none() | st.booleans())
shops = st.builds(Shop, refunds=refunds, exchanges=exchanges)


@given(shops, st.booleans())
def test_each_given_key_replaces_the_default_and_each_left_out_keeps_it(whole: Shop, env_ships: bool) -> None:
    default = replace(DEFAULT, replacement_at_first_scan=env_ships)
    p = shop_policy(default, whole)
    shop = whole.refunds
    ship = whole.exchanges.ship_at_first_scan
    assert p.replacement_at_first_scan == (env_ships if ship is None else ship)
    p = replace(p, replacement_at_first_scan=DEFAULT.replacement_at_first_scan)
    e = shop.early_refund
    assert p.early_refund == (DEFAULT.early_refund if e is None or e.enabled is None else e.enabled)
    assert p.early_refund_cap == (DEFAULT.early_refund_cap if e is None or e.cap is None else e.cap)
    expected_claw = DEFAULT.early_refund_max_clawbacks if e is None or e.max_clawbacks is None else e.max_clawbacks
    assert p.early_refund_max_clawbacks == expected_claw
    days = shop.return_window_days
    assert p.return_window == (DEFAULT.return_window if days is None else timedelta(days=days))
    expected = DEFAULT.authority if shop.authority is None else authority_from(shop.authority.preset, {})
    assert p.authority == expected


def test_no_shop_and_an_empty_shop_keep_the_default() -> None:
    assert shop_policy(DEFAULT, None) is DEFAULT
    assert shop_policy(DEFAULT, Shop()) == DEFAULT
    assert shop_policy(DEFAULT, Shop(refunds=Refunds(), exchanges=Exchanges())) == DEFAULT
