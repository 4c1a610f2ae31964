# ruff: noqa: RUF001  (full-width characters are what these tests are about)
"""Property tests of notify's pure rules: quiet hours, opt-out keywords, daily cap, pacing, the
decision for a due message, reminders, locale choice, money and phone numbers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from contracts.events import ScanCode
from returnflow.loops import retry_delay_s
from services.notify.rules import (
    CHAIN,
    OPT_IN_KEYWORDS,
    OPT_OUT_KEYWORDS,
    Defer,
    Lifecycle,
    Pending,
    QuietHours,
    Rules,
    Send,
    Situation,
    Suppress,
    classify_keyword,
    decide,
    format_money,
    gives_up,
    local_day_bounds,
    needs_reminders,
    normalize_phone,
    opted_out_after,
    pace,
    pick_locale,
    quiet_until,
    reminder_schedule,
    reminders,
    superseded,
    undelivered_news,
)
from tests.integration.notify_support import cancelled, escalated, issued, received, requested, scanned

ZONES = ["Asia/Shanghai", "Europe/London", "Europe/Madrid", "America/New_York", "America/Sao_Paulo", "Asia/Kolkata"]
instants = st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC))
zones = st.sampled_from(ZONES).map(ZoneInfo)
QUIET = QuietHours(21, 8)


def local_hour(t: datetime, tz: ZoneInfo) -> int:
    return t.astimezone(tz).hour


# -- quiet hours ---------------------------------------------------------------------------------------


@given(instants, zones)
def test_quiet_hours_defer_to_8_local_and_never_inside_the_night(now, tz):
    until = quiet_until(now, tz, QUIET)
    hour = local_hour(now, tz)
    if 8 <= hour < 21:
        assert until is None
    else:
        assert until is not None and until > now
        local = until.astimezone(tz)
        assert (local.hour, local.minute, local.second) == (8, 0, 0)
        assert until - now <= timedelta(hours=11, minutes=1)  # at most one night away
        assert quiet_until(until, tz, QUIET) is None


@given(instants, zones, st.integers(0, 23), st.integers(0, 23))
def test_quiet_until_is_outside_any_configured_window(now, tz, start, end):
    quiet = QuietHours(start, end)
    until = quiet_until(now, tz, quiet)
    if until is None:
        assert not quiet.contains_hour(local_hour(now, tz))
    else:
        assert until > now and not quiet.contains_hour(local_hour(until, tz))


@given(instants, zones)
def test_local_day_bounds_contain_now(now, tz):
    start, end = local_day_bounds(now, tz)
    assert start <= now < end
    assert timedelta(hours=22) <= end - start <= timedelta(hours=26)


# -- opt-out -------------------------------------------------------------------------------------------------


def _case_variants(word: str) -> st.SearchStrategy[str]:
    return st.lists(st.booleans(), min_size=len(word), max_size=len(word)).map(
        lambda flags: "".join(c.lower() if f else c for c, f in zip(word, flags, strict=True))
    )


pad = st.sampled_from(["", " ", "  ", "\n", "\t", "!", ".", "。", "！"])


@given(st.sampled_from(sorted(OPT_OUT_KEYWORDS)).flatmap(_case_variants), pad, pad)
def test_every_opt_out_keyword_in_any_case_and_spacing_opts_out(word, before, after):
    assert classify_keyword(before.strip(".!。！") + word + after) == "opt_out"


@given(st.sampled_from(sorted(OPT_IN_KEYWORDS)).flatmap(_case_variants), pad)
def test_opt_in_keywords(word, after):
    assert classify_keyword(word + after) == "opt_in"


@given(st.text(max_size=40))
def test_other_replies_change_nothing(text):
    assume(text.strip().upper().strip(".!。！ ") not in OPT_OUT_KEYWORDS | OPT_IN_KEYWORDS)
    k = classify_keyword(text)
    assume(k is None or len(text) > 12)  # the keywords themselves, in exotic spellings, are fine
    if k is None:
        assert opted_out_after([k], initially=True) is True
        assert opted_out_after([k], initially=False) is False


def test_fullwidth_and_chinese_keywords():
    assert classify_keyword("ＳＴＯＰ") == "opt_out"
    assert classify_keyword("退订") == "opt_out"
    assert classify_keyword(" td ") == "opt_out"
    assert classify_keyword("请不要退订") is None
    assert classify_keyword("stop please") is None


keywords = st.lists(st.sampled_from(["opt_out", "opt_in", None]), max_size=20)


@given(keywords, st.booleans())
def test_nothing_after_an_opt_out_until_an_opt_in(seq, initially):
    state = opted_out_after(seq, initially)
    changes = [k for k in seq if k is not None]
    assert state == (changes[-1] == "opt_out" if changes else initially)


# -- decisions -------------------------------------------------------------------------------------------

steps = st.sampled_from(
    ["requested", "parcel_seen", "received", "under_review", "refund_paid", "reminder_1", "reminder_2"]
)
step_sets = st.frozensets(steps, max_size=4)
rules_st = st.builds(
    Rules,
    quiet=st.just(QUIET),
    daily_cap=st.integers(0, 6),
    reminder_stale_s=st.sampled_from([60.0, 3600.0, 43200.0]),
)


@st.composite
def situations(draw):
    now = draw(instants)
    return Situation(
        now=now,
        opted_out=draw(st.booleans()),
        closed=draw(st.booleans()),
        sent_today=draw(st.integers(0, 8)),
        sent_steps=draw(step_sets),
        due_steps=draw(step_sets),
    )


@settings(max_examples=300)
@given(steps, st.integers(0, 86400 * 3), st.sampled_from(ZONES), situations(), rules_st)
def test_decide_never_sends_at_night_after_stop_over_cap_or_stale(step, late_s, tz, sit, rules):
    pending = Pending(step, sit.now - timedelta(seconds=late_s), tz)
    d = decide(pending, sit, rules)
    hour = local_hour(sit.now, ZoneInfo(tz))
    if isinstance(d, Send):
        assert not sit.opted_out and not sit.closed
        assert 8 <= hour < 21
        assert sit.sent_today < rules.daily_cap
        assert not superseded(step, sit.sent_steps, sit.due_steps - {step})
        if step.startswith("reminder_"):
            assert late_s <= rules.reminder_stale_s
    elif isinstance(d, Defer):
        assert d.until > sit.now
        assert quiet_until(d.until, ZoneInfo(tz), QUIET) is None  # deferred to daytime
        assert not sit.opted_out and not sit.closed
    else:
        assert isinstance(d, Suppress) and d.reason


@given(instants, st.sampled_from(ZONES), st.integers(1, 5))
def test_daily_cap_holds_over_a_simulated_day(start, tz, cap):
    """Offer a care message every 20 minutes for a day: no local day gets more than `cap`."""
    rules = Rules(quiet=QUIET, daily_cap=cap)
    zone = ZoneInfo(tz)
    sent: list[datetime] = []
    t = start
    for _ in range(72):
        day_start, day_end = local_day_bounds(t, zone)
        today = sum(1 for x in sent if day_start <= x < day_end)
        if isinstance(decide(Pending("requested", t, tz), Situation(now=t, sent_today=today), rules), Send):
            sent.append(t)
        t += timedelta(minutes=20)
    per_day: dict[object, int] = {}
    for x in sent:
        per_day[x.astimezone(zone).date()] = per_day.get(x.astimezone(zone).date(), 0) + 1
    assert all(n <= cap for n in per_day.values())


def test_care_message_over_the_cap_waits_for_tomorrow_morning_a_reminder_is_dropped():
    now = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)  # 14:00 in Shanghai
    sit = Situation(now=now, sent_today=5)
    care = decide(Pending("received", now, "Asia/Shanghai"), sit, Rules(daily_cap=5))
    assert isinstance(care, Defer) and care.reason == "daily_cap"
    assert care.until.astimezone(ZoneInfo("Asia/Shanghai")) == datetime(
        2026, 11, 21, 8, 0, tzinfo=ZoneInfo("Asia/Shanghai")
    )
    assert decide(Pending("reminder_1", now, "Asia/Shanghai"), sit, Rules(daily_cap=5)) == Suppress("daily_cap")


@given(steps, step_sets)
def test_a_chain_step_is_superseded_only_by_a_later_chain_step_sent(step, sent):
    if step in CHAIN:
        assert superseded(step, sent) == any(s in CHAIN and CHAIN[s] > CHAIN[step] for s in sent)
    elif step == "under_review":
        assert not superseded(step, sent)


def test_only_the_latest_of_several_due_reminders_goes():
    assert superseded("reminder_1", set(), {"reminder_2"})
    assert not superseded("reminder_2", set(), {"reminder_1"})
    assert superseded("reminder_2", {"parcel_seen"})
    assert not superseded("reminder_2", {"requested", "under_review"})


# -- reminders, pacing, retries ----------------------------------------------------------------------------


@given(instants, st.lists(st.floats(-10, 1e7, allow_nan=False), max_size=6))
def test_reminder_schedule_in_order_then_stops(at, intervals):
    plan = reminder_schedule(at, intervals)
    positive = sorted(x for x in intervals if x > 0)
    assert [s for s, _ in plan] == [f"reminder_{i}" for i in range(1, len(positive) + 1)]
    dues = [d for _, d in plan]
    assert dues == sorted(dues) and all(d >= at for d in dues)


LIFECYCLE = {
    "requested": lambda rid: requested(rid=rid),
    "picked_up": lambda rid: scanned(rid, ScanCode.picked_up),
    "accepted": lambda rid: scanned(rid, ScanCode.accepted),  # at the counter: not moving yet
    "exception": lambda rid: scanned(rid, ScanCode.exception),
    "received": received,
    "escalated": escalated,
    "issued": issued,
    "cancelled": cancelled,
}
STEP_OF = {
    "requested": "requested",
    "picked_up": "parcel_seen",
    "received": "received",
    "escalated": "under_review",
    "issued": "refund_paid",
}


@given(st.lists(st.sampled_from(sorted(LIFECYCLE)), max_size=12))
def test_each_lifecycle_event_asks_for_its_step_and_flags_its_return(kinds):
    rid = uuid.uuid4()
    by_kind = [(k, LIFECYCLE[k](rid)) for k in kinds]

    def of(*names):
        return [e for k, e in by_kind if k in names]

    lifecycle = Lifecycle(
        requested=of("requested"),
        scanned=of("picked_up", "accepted", "exception"),
        received=of("received"),
        escalated=of("escalated"),
        issued=of("issued"),
        cancelled=of("cancelled"),
    )
    now = datetime(2026, 3, 1, 4, tzinfo=UTC)
    news = lifecycle.news(now)
    assert sorted(n.step for n in news) == sorted(STEP_OF[k] for k in kinds if k in STEP_OF)
    assert all(n.return_id == rid and n.due_at == now and n.kind == "care" for n in news)
    assert {n.source_event_id for n in news} <= {str(e.event_id) for _, e in by_kind}
    moving = any(k in ("picked_up", "received", "issued") for k in kinds)
    assert set(lifecycle.goods_moving()) == ({rid} if moving else set())
    assert lifecycle.closed() == [rid] * kinds.count("cancelled")


@given(st.lists(st.floats(-10, 1e6, allow_nan=False), max_size=5))
def test_reminders_are_reminder_steps_at_the_schedule(intervals):
    e = requested()
    got = reminders(e, intervals)
    assert [(m.step, m.due_at) for m in got] == reminder_schedule(e.requested_at, intervals)
    assert all(m.kind == "reminder" and m.params == {} and m.return_id == e.return_id for m in got)


@given(st.sampled_from(["refund_only", "return_and_refund", "exchange"]), st.booleans(), st.booleans())
def test_reminders_only_when_goods_must_come_back_and_have_not_moved(kind, moving, closed):
    assert needs_reminders(kind, moving, closed) == (kind != "refund_only" and not moving and not closed)


@settings(max_examples=200)
@given(
    st.floats(0.5, 50),
    st.integers(1, 5),
    st.lists(st.floats(0, 2, allow_nan=False), min_size=1, max_size=60),
)
def test_pacing_never_exceeds_rate_plus_burst_in_any_window(rate, burst, gaps):
    t = datetime(2026, 1, 1, tzinfo=UTC)
    tat = None
    slots: list[datetime] = []
    for gap in gaps:
        t += timedelta(seconds=gap)
        send_at, tat = pace(tat, t, rate, burst)
        assert send_at >= t
        slots.append(send_at)
    assert slots == sorted(slots)
    for i in range(len(slots)):
        for j in range(i, len(slots)):
            window = (slots[j] - slots[i]).total_seconds()
            assert j - i + 1 <= burst + window * rate + 1e-6


@given(st.integers(1, 30), st.floats(0.01, 10), st.floats(1, 600))
def test_retry_backoff_grows_and_is_capped(attempt, base, cap):
    # the sender schedules a retry with the runtime's jittered backoff: within [ceiling / 2, ceiling],
    # the ceiling doubling with each attempt up to the cap
    ceiling = min(base * 2 ** (attempt - 1), cap)
    d = retry_delay_s(attempt, base, cap)
    assert 0 < ceiling / 2 <= d <= ceiling <= cap
    assert min(base * 2**attempt, cap) >= ceiling


@given(st.integers(1, 20), st.integers(1, 20))
def test_a_failing_send_is_tried_max_attempts_times_in_all(attempt, max_attempts):
    assert gives_up(attempt, max_attempts) == (attempt >= max_attempts)


@given(st.sampled_from([True, False, None]), st.sampled_from(["delivered", "undelivered", "failed"]))
def test_a_not_delivered_receipt_is_news_once(delivered, status):
    assert undelivered_news(delivered, status, None) == (delivered is False)
    assert not undelivered_news(delivered, status, status)  # the same receipt again


# -- locale, money, phone numbers ------------------------------------------------------------------------------

AVAILABLE = ("en", "es", "zh-CN")


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_", max_size=8))
def test_pick_locale_always_gives_an_available_one(requested):
    assert pick_locale(requested, AVAILABLE, "en") in AVAILABLE


@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        ("zh-CN", "zh-CN"),
        ("zh", "zh-CN"),
        ("zh_TW", "zh-CN"),
        ("es-MX", "es"),
        ("en-GB", "en"),
        ("fr", "en"),
        ("", "en"),
    ],
)
def test_pick_locale_examples(requested, expected):
    assert pick_locale(requested, AVAILABLE, "en") == expected


@given(st.integers(0, 10**12), st.sampled_from(["CNY", "USD", "EUR", "GBP", "JPY"]), st.sampled_from(AVAILABLE))
def test_money_shows_the_exact_amount(minor, currency, locale):
    text = format_money(minor, currency, locale)
    digits = "".join(c for c in text if c.isdigit())
    exponent = 0 if currency == "JPY" else 2
    assert Decimal(int(digits)).scaleb(-exponent) == Decimal(minor).scaleb(-exponent)


def test_money_reads_as_the_locale_writes_it():
    assert format_money(4000, "CNY", "zh-CN") == "¥40.00"
    assert format_money(4000, "CNY", "en") == "CN¥40.00"
    assert format_money(123456, "EUR", "es").replace("\xa0", " ") == "1.234,56 €"
    assert format_money(1500, "JPY", "en") == "¥1,500"


@given(st.from_regex(r"1[3-9]\d{9}", fullmatch=True), st.sampled_from(["", "+86", "0086", "86"]))
def test_mainland_numbers_in_every_provider_spelling_normalize_to_e164(national, prefix):
    e164 = normalize_phone(prefix + national)
    assert e164 == "+86" + national
    assert normalize_phone(e164) == e164
