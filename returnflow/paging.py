"""Cursor pagination of the work queues (oldest first): a cursor is opaque to the caller — the position
(time, id) of the last item of the previous page, base64url JSON — and a bad one is a 422 naming `cursor`."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson

from returnflow.http import HttpProblem

CURSOR_FIELD = "cursor"


def encode_cursor(at: datetime, key: str) -> str:
    raw = orjson.dumps([at.isoformat(), key])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> tuple[datetime, str] | None:
    """The position a cursor holds; None for no cursor (the first page)."""
    if cursor is None or cursor == "":
        return None
    try:
        at, key = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        when = datetime.fromisoformat(at)
        if when.tzinfo is None or not isinstance(key, str):
            raise ValueError(cursor)
    except (binascii.Error, ValueError, TypeError, orjson.JSONDecodeError):
        raise HttpProblem(
            422, "validation failed", [{"field": CURSOR_FIELD, "message": "not a cursor this list gave"}]
        ) from None
    return when, key


def page(rows: Sequence[Any], limit: int, at: str, key: str) -> tuple[list[dict[str, Any]], str | None]:
    """The first `limit` rows (a query asks for limit + 1) and the cursor after them, None on the last page."""
    items = [dict(r) for r in rows[:limit]]
    if len(rows) <= limit or not items:
        return items, None
    last = items[-1]
    return items, encode_cursor(last[at], str(last[key]))
