"""Every SMS template, with its link, fits two segments in its encoding; Babel's no-break spaces never
turn a Latin-script text into UCS-2. The table of every template is in services/notify/templates/README.md
(`make docs`)."""

from __future__ import annotations

from apphost.docs import SMS_README, render_sms_lengths
from services.notify.render import MAX_SEGMENTS, SAMPLE_LINK, Templates, length_rows, sample_values
from services.notify.rules import format_money, gsm_spaces, sms_segments


def test_every_template_with_a_link_fits_two_segments():
    rows = length_rows(Templates())
    print("\n" + "\n".join(" ".join(map(str, r)) for r in rows))  # the report (pytest -s)
    too_long = [r for r in rows if r[5] > MAX_SEGMENTS]
    assert not too_long


def test_latin_script_texts_are_gsm7_even_with_money():
    t = Templates()
    for locale in ("en", "es"):
        for step in ("refund_paid", "under_review"):
            values = {**sample_values(), "link": SAMPLE_LINK, "amount_minor": 123456, "currency": "EUR"}
            text = t.render(step, locale, values)
            assert "\xa0" in format_money(123456, "EUR", locale) or locale == "en"
            assert sms_segments(text)[0] == "GSM-7", text


def test_segments_by_encoding():
    assert sms_segments("a" * 160) == ("GSM-7", 1)
    assert sms_segments("a" * 161) == ("GSM-7", 2)
    assert sms_segments("€" * 80) == ("GSM-7", 1)  # extension table: two septets each
    assert sms_segments("退" * 70) == ("UCS-2", 1)
    assert sms_segments("退" * 71) == ("UCS-2", 2)
    assert sms_segments("a\xa0b") == ("UCS-2", 1)
    assert gsm_spaces("40,00\xa0€ 3:04\u202fPM") == "40,00 € 3:04 PM"


def test_the_committed_table_is_current():
    assert render_sms_lengths(SMS_README.read_text()) == SMS_README.read_text(), "run make docs"
