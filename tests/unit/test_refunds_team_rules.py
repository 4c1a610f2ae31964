"""The team numbers' pure parts: the share of authority used, and the range of days a request may ask."""

from __future__ import annotations

from datetime import date, timedelta

from hypothesis import given
from hypothesis import strategies as st

from services.refunds.rules import TEAM_MAX_DAYS, authority_share_bp, team_range

grants = st.lists(st.tuples(st.integers(1, 10**9), st.one_of(st.none(), st.integers(0, 10**9))), max_size=20)


def test_a_share_by_hand() -> None:
    assert authority_share_bp([(1_500, 2_000)]) == 7_500
    assert authority_share_bp([(1_500, 2_000), (3_000, 5_000)]) == 6_750
    assert authority_share_bp([(3_000, 2_000)]) == 10_000  # approved above by a higher role: capped
    assert authority_share_bp([(500, None), (500, 0)]) is None  # unlimited, or no authority: no share
    assert authority_share_bp([]) is None


@given(grants)
def test_a_share_is_between_none_and_all_and_none_only_without_a_limit(g: list[tuple[int, int | None]]) -> None:
    share = authority_share_bp(g)
    assert (share is None) == all(not limit for _, limit in g)
    assert share is None or 0 <= share <= 10_000


@given(grants, st.integers(1, 10**6))
def test_granting_more_never_lowers_the_share(g: list[tuple[int, int | None]], more: int) -> None:
    before, after = authority_share_bp(g), authority_share_bp([(a + more, lim) for a, lim in g])
    assert before is None or (after is not None and after >= before)


@given(st.dates(date(2000, 1, 1), date(2100, 1, 1)), st.integers(-400, 400))
def test_a_range_is_refused_backwards_or_beyond_a_quarter(start: date, days: int) -> None:
    refused = team_range(start, start + timedelta(days=days))
    assert (refused is None) == (0 <= days < TEAM_MAX_DAYS)
    if days < 0:
        assert refused is not None and "`to`" in refused
