"""Phone numbers in E.164: the one rule for reading a number a person or a provider typed (notify's
inbound SMS and delivery callbacks, the returns search by phone)."""

from __future__ import annotations

import re

_DIGITS = re.compile(r"\D")


def normalize_phone(raw: str, default_country: str = "86") -> str | None:
    """E.164 from what people and providers write: '+8613812345678', '+86 138-1234-5678', '008613812345678',
    '8613812345678' or a mainland '13812345678' all give '+8613812345678'. None if not a number."""
    if not raw:
        return None
    s = raw.strip()
    digits = _DIGITS.sub("", s)
    if not digits:
        return None
    if s.startswith("+"):
        pass
    elif digits.startswith("00"):
        digits = digits[2:]
    elif default_country == "86" and len(digits) == 11 and digits.startswith("1"):
        digits = "86" + digits
    elif len(digits) <= 10 and default_country:
        digits = default_country + digits.lstrip("0")
    if not (7 <= len(digits) <= 15) or digits.startswith("0"):
        return None
    return "+" + digits
