"""The workbench's pure decisions: who may do what, the queue's order, filters and cursor, a typed amount,
a person's authority left on a return, and a receipt form read line by line. No I/O here; property-tested
in tests/unit/test_workbench_rules.py."""

from __future__ import annotations

import base64
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import orjson

# -- people and what each role may do ----------------------------------------------------------------
DECIDERS = ("agent", "supervisor", "manager", "owner")  # the refunds roster
RETURNS_TEAM = "returns_team"  # audit's people: the second check
WAREHOUSE = "warehouse"  # warehouse staff with a personal token
ROLES = (*DECIDERS, RETURNS_TEAM, WAREHOUSE)

PERMISSIONS: Mapping[str, frozenset[str]] = {
    "queue": frozenset((*DECIDERS, RETURNS_TEAM)),
    "return": frozenset((*DECIDERS, RETURNS_TEAM, WAREHOUSE)),  # the warehouse: to ship an exchange's replacement
    "decide": frozenset(DECIDERS),
    "resolve_clawback": frozenset(DECIDERS),
    "check": frozenset((RETURNS_TEAM,)),
    "resolve_discrepancy": frozenset((RETURNS_TEAM,)),
    "receive": frozenset((WAREHOUSE,)),
    "ship": frozenset((WAREHOUSE,)),  # an exchange's replacement, and its out-of-stock report
    "team": frozenset(("supervisor", "manager", "owner")),  # the team's numbers: who runs the team
}


def may(role: str, action: str) -> bool:
    """Whether a person of this role may open this screen or take this action (unknown: never)."""
    return role in PERMISSIONS.get(action, frozenset())


def home_of(role: str) -> str:
    """Where a person lands after signing in: their work."""
    if role == WAREHOUSE:
        return "/receive"
    if role == RETURNS_TEAM:
        return "/check"
    return "/queue"


# -- money typed by a person ---------------------------------------------------------------------------
AMOUNT = re.compile(r"^(\d{1,12})(?:[.,](\d*))?$")


def parse_amount(text: str, digits: int = 2) -> int:
    """ "15", "15.5", "15.00" (or a comma) -> minor units (1500, 1550, 1500); ValueError saying why.
    Exact: never through a float."""
    m = AMOUNT.match(text.strip().replace(" ", ""))
    if m is None:
        raise ValueError(f"enter an amount like 15.00 (at most {digits} decimals)")
    whole, frac = m.group(1), m.group(2) or ""
    if len(frac) > digits:
        raise ValueError(f"at most {digits} decimals")
    minor = int(whole) * 10**digits + int(frac.ljust(digits, "0") or "0")
    if minor <= 0:
        raise ValueError("must be more than 0")
    return minor


# -- authority ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Authority:
    """A person's cumulative authority on one return: their limit (None: unlimited), what people have
    granted on it so far (the limits are cumulative), and what is left to them."""

    limit: int | None
    granted: int

    @property
    def left(self) -> int | None:
        return None if self.limit is None else max(0, self.limit - self.granted)


def limit_for(limits: Mapping[str, int | None], currency: str) -> int | None:
    """The person's limit in this currency from the roster's answer (currency, else "*", else 0)."""
    if currency in limits:
        return limits[currency]
    if "*" in limits:
        return limits["*"]
    return 0


def granted_by_people(refunds: Iterable[Mapping[str, object]]) -> int:
    """What people (not the automatic policy) have refunded on a return, failed refunds not counted: the
    amount a person's cumulative limit is measured against."""
    total = 0
    for r in refunds:
        amount = r.get("amount")
        if r.get("actor_id") and r.get("status") != "failed" and isinstance(amount, int):
            total += amount
    return total


# -- the queue --------------------------------------------------------------------------------------------
KINDS = ("escalation", "failure", "clawback", "discrepancy", "parked_scan", "sms")


@dataclass(frozen=True)
class QueueItem:
    kind: str
    item_id: str
    created_at: datetime
    return_id: str | None = None
    role_needed: str | None = None
    amount: int | None = None
    currency: str | None = None
    shop: str | None = None
    summary: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.created_at.isoformat(), self.kind, self.item_id)


@dataclass(frozen=True)
class QueueFilter:
    kind: str | None = None
    shop: str | None = None
    role: str | None = None
    min_age_s: float | None = None
    min_amount: int | None = None

    def keeps(self, item: QueueItem, now: datetime, *, ignore_kind: bool = False) -> bool:
        if not ignore_kind and self.kind and item.kind != self.kind:
            return False
        if self.shop and item.shop != self.shop:
            return False
        if self.role and item.role_needed != self.role:
            return False
        if self.min_age_s is not None and (now - item.created_at).total_seconds() < self.min_age_s:
            return False
        return self.min_amount is None or (item.amount is not None and item.amount >= self.min_amount)


@dataclass(frozen=True)
class QueuePage:
    items: list[QueueItem]
    next_cursor: str | None
    counts: dict[str, int] = field(default_factory=dict)  # per kind, under the other filters
    total: int = 0


def encode_cursor(key: tuple[str, str, str]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(key))).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str, str]:
    """The key of the last item of the previous page; ValueError for anything else."""
    try:
        raw = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise ValueError("not a cursor of this queue") from exc
    if not (isinstance(raw, list) and len(raw) == 3 and all(isinstance(x, str) for x in raw)):
        raise ValueError("not a cursor of this queue")
    return (raw[0], raw[1], raw[2])


def queue_page(items: Iterable[QueueItem], f: QueueFilter, now: datetime, cursor: str | None, size: int) -> QueuePage:
    """The work needing a person, oldest first (ties by kind, then id), under the filter; the page after
    `cursor`; the counts per kind (under every filter but the kind)."""
    kept = [i for i in items if f.keeps(i, now, ignore_kind=True)]
    counts = dict(Counter(i.kind for i in kept))
    chosen = sorted((i for i in kept if not f.kind or i.kind == f.kind), key=lambda i: i.key)
    after = decode_cursor(cursor) if cursor else None
    if after is not None:
        chosen = [i for i in chosen if _after(i, after)]
    page = chosen[:size]
    more = len(chosen) > size
    return QueuePage(page, encode_cursor(page[-1].key) if more and page else None, counts, len(kept))


def _after(item: QueueItem, key: tuple[str, str, str]) -> bool:
    # compare instants, not their text: 2026-12-02T10:00:00+08:00 is before 2026-12-02T03:00:00+00:00
    at = datetime.fromisoformat(key[0])
    return (item.created_at, item.kind, item.item_id) > (at, key[1], key[2])


# -- the receiving form -------------------------------------------------------------------------------------
CONDITIONS = ("as_described", "damaged", "wrong_item", "missing")
DISPOSITIONS = ("restock", "destroy", "refurbish", "quarantine")


COUNT = re.compile(r"^[0-9]{1,6}$")


def is_count(text: str) -> bool:
    """0 to 999999 in ASCII digits ("²" and "٣" are digits to str.isdigit, not counts)."""
    return COUNT.match(text) is not None


@dataclass(frozen=True)
class ReceiptForm:
    lines: list[dict[str, object]]
    errors: dict[str, str]  # form field -> message, shown next to it


def read_receipt_form(form: Mapping[str, str], expected: Sequence[Mapping[str, object]]) -> ReceiptForm:
    """Per expected line i: qty_i (0 .. expected qty), condition_i, disposition_i (needed when something
    came back). Errors are keyed by the form field so the page puts each next to its field."""
    lines: list[dict[str, object]] = []
    errors: dict[str, str] = {}
    for i, exp in enumerate(expected):
        sku, want = str(exp.get("sku")), exp.get("qty")
        raw = (form.get(f"qty_{i}") or "").strip()
        if not is_count(raw):
            errors[f"qty_{i}"] = "enter the quantity received (0 or more)"
            continue
        qty = int(raw)
        if isinstance(want, int) and qty > want:
            errors[f"qty_{i}"] = f"at most {want} expected"
            continue
        condition = form.get(f"condition_{i}") or ""
        if condition not in CONDITIONS:
            errors[f"condition_{i}"] = "choose a condition"
            continue
        line: dict[str, object] = {"sku": sku, "qty_received": qty, "condition": condition}
        disposition = form.get(f"disposition_{i}") or ""
        if qty > 0:
            if disposition not in DISPOSITIONS:
                errors[f"disposition_{i}"] = "choose what happens to it"
                continue
            line["disposition"] = disposition
        lines.append(line)
    return ReceiptForm(lines, errors)


# -- an exchange's replacement, shipped from the workbench -------------------------------------------------
CARRIER = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")  # the warehouse's courier slug (services/warehouse/schemas.py)
OUTGOING_TRACKING = re.compile(r"^[A-Z0-9]{6,40}$")
MAX_REPLACEMENT_QTY = 10_000
API_LINE_FIELD = re.compile(r"^lines\.(\d{1,3})\.(sku|qty)$")


def replacement_due(parcel: Mapping[str, object] | None) -> bool:
    """The warehouse's parcel of an exchange whose goods are received and whose replacement has not
    shipped: the workbench offers to ship it (or to report it out of stock)."""
    return (
        parcel is not None
        and parcel.get("kind") == "exchange"
        and bool(parcel.get("receipt"))
        and not parcel.get("replacement")
    )


def replacement_lines(expected: Sequence[Mapping[str, object]]) -> list[dict[str, object]]:
    """What the form offers per exchange line: the replacement SKU (else the same SKU) and quantity."""
    return [{"sku": str(x.get("replacement_sku") or x.get("sku")), "qty": x.get("qty")} for x in expected]


@dataclass(frozen=True)
class ReplacementForm:
    carrier: str
    tracking_no: str
    lines: list[dict[str, object]]  # [{sku, qty}], what the warehouse is told was packed
    errors: dict[str, str]  # form field -> message, shown next to it


def read_replacement_form(form: Mapping[str, str], count: int) -> ReplacementForm:
    """sku_i and qty_i (1 .. 10000) for each of `count` lines, the courier's slug and the outgoing
    tracking number (spaces dropped, upper case). Errors are keyed by the form field."""
    errors: dict[str, str] = {}
    lines: list[dict[str, object]] = []
    for i in range(count):
        sku = (form.get(f"sku_{i}") or "").strip()
        if not 1 <= len(sku) <= 64:
            errors[f"sku_{i}"] = "enter the SKU packed (at most 64 characters)"
        raw = (form.get(f"qty_{i}") or "").strip()
        if not is_count(raw) or not 1 <= int(raw) <= MAX_REPLACEMENT_QTY:
            errors[f"qty_{i}"] = f"enter the quantity packed (1 to {MAX_REPLACEMENT_QTY})"
        if f"sku_{i}" not in errors and f"qty_{i}" not in errors:
            lines.append({"sku": sku, "qty": int(raw)})
    carrier = (form.get("carrier") or "").strip().lower()
    if not CARRIER.match(carrier):
        errors["carrier"] = "enter the courier (e.g. sf, yto, zto)"
    tracking_no = "".join((form.get("tracking_no") or "").split()).upper()
    if not OUTGOING_TRACKING.match(tracking_no):
        errors["tracking_no"] = "enter the outgoing tracking number (6 to 40 letters and digits)"
    return ReplacementForm(carrier, tracking_no, lines, errors)


def replacement_form_field(api_field: str) -> str:
    """The form field a warehouse refusal's field name (`lines.2.sku`, `tracking_no`) belongs next to;
    a field the form does not have: `form` (shown above it)."""
    if m := API_LINE_FIELD.match(api_field):
        return f"{m.group(2)}_{int(m.group(1))}"
    return api_field if api_field in ("carrier", "tracking_no") else "form"


def replacement_errors(bad: Mapping[str, str], detail: str) -> dict[str, str]:
    """A refusal's field errors by form field (messages for one field joined), else its detail."""
    out: dict[str, str] = {}
    for api_field, message in bad.items():
        key = replacement_form_field(api_field)
        out[key] = f"{out[key]}; {message}" if key in out else message
    return out or {"form": detail}


# -- the team's numbers: the range asked, the chart, the CSV ----------------------------------------------------
TEAM_DEFAULT_DAYS = 7
TEAM_MAX_DAYS = 92  # what the refunds service answers at most


@dataclass(frozen=True)
class TeamRange:
    start: date
    end: date
    errors: dict[str, str]  # form field -> message, shown next to it


DAY = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


def typed_day(text: str | None) -> date | str | None:
    """A day typed as YYYY-MM-DD; None when empty; else the message for the person."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        if DAY.match(text):
            return date.fromisoformat(text)
    except ValueError:
        pass
    return "a day like 2026-12-02"


def team_range(given_from: str | None, given_to: str | None, today: date) -> TeamRange:
    """`from` and `to` as typed (YYYY-MM-DD; empty: the last 7 days to today). Errors name the field: not a
    day, `to` before `from`, more than 92 days."""
    errors: dict[str, str] = {}
    end = typed_day(given_to)
    if isinstance(end, str):
        errors["to"], end = end, today
    end = end or today
    start = typed_day(given_from)
    if isinstance(start, str):
        errors["from"], start = start, None
    start = start or end - timedelta(days=TEAM_DEFAULT_DAYS - 1)
    if not errors and end < start:
        errors["to"] = "on or after `from`"
    elif not errors and (end - start).days + 1 > TEAM_MAX_DAYS:
        errors["to"] = f"at most {TEAM_MAX_DAYS} days after `from`"
    return TeamRange(start, end, errors)


@dataclass(frozen=True)
class Bar:
    label: str
    value: int
    x: float
    y: float
    width: float
    height: float


def bar_chart(values: Sequence[tuple[str, int]], width: float, height: float, gap: float = 2.0) -> list[Bar]:
    """Bars for an SVG of `width` x `height` (y grows downwards): one per value, left to right, equal widths
    with `gap` between; the largest value fills the height, the others in proportion, 0 (or less) none."""
    if not values:
        return []
    top = max(max(v for _, v in values), 1)
    step = width / len(values)
    w = max(step - gap, 1.0) if step > gap else step
    bars = []
    for i, (label, value) in enumerate(values):
        h = height * max(value, 0) / top
        bars.append(Bar(label, value, i * step, height - h, w, h))
    return bars


def csv_cell(value: object) -> str:
    """A value for a spreadsheet: None empty; text that a spreadsheet would run as a formula (= + - @, tab,
    carriage return first) starts with a quote instead (numbers stay numbers)."""
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        text = str(value)
        return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
    return str(value)


def share_percent(bp: int | None) -> str:
    """Basis points as a percentage with one decimal (6375 -> "63.8"); None -> ""."""
    return "" if bp is None else f"{bp / 100:.1f}"


def duration_text(seconds: float | None) -> str:
    """A wait for people: 45 s, 12 min, 3.5 h, 2.0 d; None -> ""."""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


TEAM_CSV_NUMBERS = (
    "decisions",
    "escalations_raised",
    "escalations_resolved",
    "decision_median_s",
    "decision_p90_s",
    "free_refunds",
)


def team_csv_rows(days: Sequence[Mapping[str, object]]) -> list[list[str]]:
    """The CSV of the team's numbers: a header, then one row per (day, person); the free refunds' amount one
    column per currency (minor units), the share of authority used in percent."""
    currencies = sorted({str(c) for d in days for c in dict(d.get("free_refund_amounts") or {})})  # type: ignore[call-overload]
    header = ["day", "person", *TEAM_CSV_NUMBERS, *(f"free_refund_amount_{c}_minor" for c in currencies)]
    rows = [[*header, "authority_share_pct", "clawbacks"]]
    for d in days:
        amounts = dict(d.get("free_refund_amounts") or {})  # type: ignore[call-overload]
        share = d.get("authority_share_bp")
        rows.append(
            [
                csv_cell(d.get("day")),
                csv_cell(d.get("actor_id")),
                *(csv_cell(d.get(k)) for k in TEAM_CSV_NUMBERS),
                *(csv_cell(amounts.get(c, 0)) for c in currencies),
                share_percent(share if isinstance(share, int) else None),
                csv_cell(d.get("clawbacks")),
            ]
        )
    return rows
