"""The customer's language: which of the available locales a customer's locale picks, and how money
reads in it. One definition for every service that speaks to customers (notify's SMS, returns' page)."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from decimal import Decimal

from babel import Locale, UnknownLocaleError
from babel.numbers import format_currency, get_currency_precision


def pick_locale(requested: str | None, available: Iterable[str], default: str = "en") -> str:
    """Exact match, else the same language (zh-TW -> zh-CN, es-MX -> es), else the default."""
    avail = list(available)
    if not requested:
        return default if default in avail else (avail[0] if avail else default)
    req = requested.replace("_", "-")
    lowered = {a.lower(): a for a in avail}
    if req.lower() in lowered:
        return lowered[req.lower()]
    lang = req.split("-")[0].lower()
    for a in avail:
        if a.split("-")[0].lower() == lang:
            return a
    return default if default in avail else (avail[0] if avail else default)


@functools.lru_cache(maxsize=64)  # Locale.parse loads and builds its data each time: 12% of a page's CPU
def babel_locale(locale: str) -> Locale:
    try:
        return Locale.parse(locale.replace("-", "_"))
    except (UnknownLocaleError, ValueError):
        return Locale.parse("en")


def format_money(minor: int, currency: str, locale: str) -> str:
    """Integer minor units as the locale writes them: 4000 CNY -> ¥40.00 (zh-CN), CN¥40.00 (en),
    40,00 CN¥ (es). Exact: never goes through a float. Babel separates with no-break spaces (U+00A0,
    U+202F): right on a page, and SMS text replaces them (notify: gsm_spaces)."""
    digits = get_currency_precision(currency)
    amount = Decimal(minor).scaleb(-digits)
    return str(format_currency(amount, currency, locale=babel_locale(locale), currency_digits=True))
