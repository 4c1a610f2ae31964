"""The workbench's team numbers, their pure parts: who may see them, the days asked, the bar chart's
geometry, the CSV's cells and rows (read back by a CSV reader), and the page in both languages."""

from __future__ import annotations

import csv
import io
import itertools
from datetime import date, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from starlette.requests import Request

from services.workbench import api, rules
from services.workbench.handlers import Session

TODAY = date(2026, 12, 2)


def test_only_supervisors_and_above_see_the_team_numbers() -> None:
    assert [r for r in rules.ROLES if rules.may(r, "team")] == ["supervisor", "manager", "owner"]


def test_the_days_asked_default_to_the_last_week_and_errors_name_the_field() -> None:
    r = rules.team_range(None, "", TODAY)
    assert (r.start, r.end, r.errors) == (date(2026, 11, 26), TODAY, {})
    assert rules.team_range("2026-11-01", "2026-11-30", TODAY).errors == {}
    assert set(rules.team_range("yesterday", None, TODAY).errors) == {"from"}
    assert set(rules.team_range(None, "2026-02-30", TODAY).errors) == {"to"}
    assert set(rules.team_range("20261101", None, TODAY).errors) == {"from"}  # a day is YYYY-MM-DD
    assert set(rules.team_range("2026-12-02", "2026-12-01", TODAY).errors) == {"to"}
    assert set(rules.team_range("2026-01-01", "2026-12-01", TODAY).errors) == {"to"}


@given(st.dates(date(2000, 1, 1), date(2100, 1, 1)), st.integers(-200, 200))
def test_a_range_is_accepted_only_forwards_and_within_92_days(start: date, days: int) -> None:
    r = rules.team_range(start.isoformat(), (start + timedelta(days=days)).isoformat(), TODAY)
    assert (r.errors == {}) == (0 <= days < rules.TEAM_MAX_DAYS)
    assert (r.start, r.end) == (start, start + timedelta(days=days))


values = st.lists(st.tuples(st.text(max_size=5), st.integers(0, 10**6)), max_size=100)


@given(values, st.integers(50, 2000), st.integers(10, 500))
def test_bars_stay_in_the_box_in_order_and_in_proportion(v: list[tuple[str, int]], w: int, h: int) -> None:
    bars = rules.bar_chart(v, w, h)
    assert [(b.label, b.value) for b in bars] == v
    for b in bars:
        assert 0 <= b.x and b.x + b.width <= w + 1e-6 and 0 <= b.height <= h + 1e-6
        assert abs(b.y + b.height - h) < 1e-6  # standing on the baseline
    assert all(a.x < b.x for a, b in itertools.pairwise(bars))
    top = max((x for _, x in v), default=0)
    if top > 0:
        assert max(b.height for b in bars) == h
        for b in bars:
            assert abs(b.height - h * b.value / top) < 1e-6


def test_no_values_no_bars_and_all_zero_flat() -> None:
    assert rules.bar_chart([], 100, 50) == []
    assert {b.height for b in rules.bar_chart([("a", 0), ("b", 0)], 100, 50)} == {0}


@given(st.text(max_size=20))
def test_a_csv_cell_never_starts_a_formula(text: str) -> None:
    cell = rules.csv_cell(text)
    assert cell[:1] not in ("=", "+", "-", "@", "\t", "\r")
    assert cell in (text, "'" + text)


def test_numbers_stay_numbers_in_the_csv() -> None:
    assert (rules.csv_cell(-3), rules.csv_cell(1.5), rules.csv_cell(None)) == ("-3", "1.5", "")


DAYS: list[dict[str, Any]] = [
    {
        "day": "2026-11-20",
        "actor_id": "agent-amy",
        "decisions": 1,
        "escalations_raised": 3,
        "escalations_resolved": 0,
        "decision_median_s": None,
        "decision_p90_s": None,
        "free_refunds": 1,
        "free_refund_amounts": {"CNY": 1500},
        "authority_share_bp": 7500,
        "clawbacks": 1,
    },
    {
        "day": "2026-11-20",
        "actor_id": '=cmd|"quoted, name"',
        "decisions": 3,
        "escalations_raised": 0,
        "escalations_resolved": 3,
        "decision_median_s": 120.0,
        "decision_p90_s": 504.0,
        "free_refunds": 3,
        "free_refund_amounts": {"CNY": 9000, "USD": 100},
        "authority_share_bp": None,
        "clawbacks": 0,
    },
]


def test_the_csv_reads_back_one_row_per_person_and_day_with_a_column_per_currency() -> None:
    out = io.StringIO()
    csv.writer(out).writerows(rules.team_csv_rows(DAYS))
    header, amy, odd = list(csv.reader(io.StringIO(out.getvalue())))
    assert header == [
        "day",
        "person",
        "decisions",
        "escalations_raised",
        "escalations_resolved",
        "decision_median_s",
        "decision_p90_s",
        "free_refunds",
        "free_refund_amount_CNY_minor",
        "free_refund_amount_USD_minor",
        "authority_share_pct",
        "clawbacks",
    ]
    assert amy == ["2026-11-20", "agent-amy", "1", "3", "0", "", "", "1", "1500", "0", "75.0", "1"]
    assert odd[1] == '\'=cmd|"quoted, name"'  # quotes and comma survive; no formula
    assert odd[5:10] == ["120.0", "504.0", "3", "9000", "100"] and odd[10] == ""


def page(lang: str, **values: Any) -> str:
    request = Request(
        {"type": "http", "method": "GET", "path": "/team", "headers": [], "query_string": f"lang={lang}".encode()}
    )
    s = Session("sup-sam", "supervisor", "token", "csrf", {}, b"")
    return api.render(request, "team.html", 200, s, tz="UTC", **values).body.decode()


def test_the_page_shows_a_row_per_person_the_chart_and_the_csv_link_in_both_languages() -> None:
    numbers = {k: v for k, v in DAYS[1].items() if k not in ("day", "actor_id")}
    body = {
        "days": DAYS,
        "people": [{"actor_id": "sup-sam", **numbers}],
        "team": numbers,
        "queue": {"open_escalations": 2, "oldest_s": 7200.0, "median_age_s": 60.0, "p90_age_s": 7000.0},
    }
    bars = rules.bar_chart(api.decisions_per_day(body, date(2026, 11, 19), date(2026, 11, 20)), 560, 120)
    assert [(b.label, b.value) for b in bars] == [("2026-11-19", 0), ("2026-11-20", 4)]
    shown = {"from": "2026-11-19", "to": "2026-11-20"}
    common = {"shown": shown, "errors": {}, "body": body, "bars": bars, "chart_w": 560, "chart_h": 120}
    extra = {"duration": rules.duration_text, "share": rules.share_percent, "csv_url": "/team.csv?from=x"}
    en, zh = page("en", **common, **extra), page("zh-CN", **common, **extra)
    assert 'data-person="sup-sam"' in en and "2 min" in en and "8 min" in en and "¥90.00" in en
    assert en.count('class="bar"') == 2 and 'data-value="4"' in en and "<svg" in en
    assert "Team numbers" in en and "团队数据" in zh and "待审批升级 2 个" in zh
    assert 'href="/team.csv?from=x"' in zh


def test_a_bad_day_is_shown_next_to_its_field() -> None:
    html = page("en", shown={"from": "x"}, errors={"from": "a day like 2026-12-02"})
    assert 'aria-describedby="t-from-err"' in html and 'id="t-from-err">a day like 2026-12-02<' in html
    assert "<svg" not in html
