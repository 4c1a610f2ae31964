"""Pure decisions of the notify service: which step a lifecycle event is, when reminders fall, and
whether a message may go now (quiet hours, opt-out, daily cap, staleness, superseded steps), how fast a
sender may go, when a failed send is given up, how money and phone numbers read. No I/O: every function
takes `now` and returns a value."""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from contracts.events import (
    ExchangeOutOfStock,
    Message,
    ParcelScanned,
    RefundBasis,
    RefundDecided,
    RefundEscalated,
    RefundIssued,
    ReplacementShipped,
    ReturnCancelled,
    ReturnKind,
    ReturnReceived,
    ReturnRequested,
    is_moving,
)
from returnflow.i18n import babel_locale, format_money, pick_locale  # noqa: F401 (notify's names for them)
from returnflow.phones import normalize_phone  # noqa: F401 (notify's name for it)

# -- steps -------------------------------------------------------------------------------------------

REQUESTED = "requested"
PARCEL_SEEN = "parcel_seen"
RECEIVED = "received"
UNDER_REVIEW = "under_review"
REFUND_PAID = "refund_paid"
# an exchange: its replacement waits for stock, is on its way, or a person made it a refund instead
REPLACEMENT_DELAYED = "replacement_delayed"
REPLACEMENT_SHIPPED = "replacement_shipped"
REFUND_INSTEAD = "refund_instead"
REMINDER_PREFIX = "reminder_"

CARE_STEPS: tuple[str, ...] = (
    REQUESTED,
    PARCEL_SEEN,
    RECEIVED,
    UNDER_REVIEW,
    REFUND_PAID,
    REPLACEMENT_DELAYED,
    REPLACEMENT_SHIPPED,
    REFUND_INSTEAD,
)

# The order a customer reads the steps in. A step already sent makes an earlier step of this chain
# pointless (a late scan after "goods received" is not news); UNDER_REVIEW can happen at any point
# and is never superseded, its rank only orders messages that are due together.
CHAIN: dict[str, int] = {
    REQUESTED: 10,
    PARCEL_SEEN: 20,
    RECEIVED: 30,
    REPLACEMENT_DELAYED: 42,
    REPLACEMENT_SHIPPED: 45,
    REFUND_INSTEAD: 46,
    REFUND_PAID: 50,
}
RANK: dict[str, int] = {**CHAIN, UNDER_REVIEW: 40}
REMINDER_RANK = 15

Kind = Literal["care", "reminder"]

# Return kinds whose goods come back (a reminder makes sense when no moving scan was seen).
GOODS_COME_BACK = frozenset({ReturnKind.return_and_refund.value, ReturnKind.exchange.value})


def reminder_step(n: int) -> str:
    return f"{REMINDER_PREFIX}{n}"


def is_reminder(step: str) -> bool:
    return step.startswith(REMINDER_PREFIX)


def reminder_no(step: str) -> int:
    return int(step[len(REMINDER_PREFIX) :])


def rank_of(step: str) -> int:
    if is_reminder(step):
        return REMINDER_RANK
    return RANK[step]


def kind_of(step: str) -> Kind:
    return "reminder" if is_reminder(step) else "care"


def needs_reminders(kind: str, goods_moving: bool, closed: bool) -> bool:
    return kind in GOODS_COME_BACK and not goods_moving and not closed


def reminder_schedule(requested_at: datetime, intervals_s: Sequence[float]) -> list[tuple[str, datetime]]:
    """reminder_1 .. reminder_n at requested_at + each interval (intervals are sorted; non-positive
    ones are dropped), then nothing more."""
    out: list[tuple[str, datetime]] = []
    for n, s in enumerate(sorted(x for x in intervals_s if x > 0), 1):
        out.append((reminder_step(n), requested_at + timedelta(seconds=s)))
    return out


# -- lifecycle events -> messages -----------------------------------------------------------------------


@dataclass(frozen=True)
class Planned:
    """A message a lifecycle event asks for: one step of one return, due at `due_at`."""

    return_id: UUID
    step: str
    due_at: datetime
    params: dict[str, Any]
    correlation_id: str
    source_event_id: str

    @property
    def kind(self) -> Kind:
        return kind_of(self.step)

    @property
    def rank(self) -> int:
        return rank_of(self.step)


def planned(e: Message, step: str, due_at: datetime, params: dict[str, Any]) -> Planned:
    return Planned(e.return_id, step, due_at, params, e.correlation_id, str(e.event_id))


def _scan_params(e: ParcelScanned) -> dict[str, Any]:
    return {"carrier": e.carrier, "tracking_no": e.tracking_no, "location": e.location}


def _money_params(e: RefundEscalated | RefundIssued | RefundDecided) -> dict[str, Any]:
    return {"amount_minor": e.amount, "currency": e.currency}


def _received_params(e: ReturnReceived) -> dict[str, Any]:
    return {"items_received": sum(line.qty_received for line in e.lines)}


def _shipped_params(e: ReplacementShipped) -> dict[str, Any]:
    """The outgoing parcel's courier and tracking number (not the return's own parcel)."""
    return {"carrier": e.carrier, "tracking_no": e.tracking_no, "items": sum(x.qty for x in e.lines)}


def _conversion_review(e: RefundEscalated) -> bool:
    return e.basis == RefundBasis.exchange_conversion


def is_conversion(e: RefundDecided) -> bool:
    """A person turned an exchange into a refund (the customer hears "refund instead")."""
    return e.decision == "refund" and e.basis == RefundBasis.exchange_conversion


@dataclass(frozen=True)
class Lifecycle:
    """The lifecycle events of one consumed batch, by kind. Order-independent: the flags (goods moving,
    cancelled) are applied first, then recipients, then messages and reminders."""

    requested: Sequence[ReturnRequested] = ()
    scanned: Sequence[ParcelScanned] = ()
    received: Sequence[ReturnReceived] = ()
    escalated: Sequence[RefundEscalated] = ()
    issued: Sequence[RefundIssued] = ()
    cancelled: Sequence[ReturnCancelled] = ()
    out_of_stock: Sequence[ExchangeOutOfStock] = ()
    shipped: Sequence[ReplacementShipped] = ()
    decided: Sequence[RefundDecided] = ()

    def goods_moving(self) -> list[UUID]:
        """Returns whose goods are on their way (a moving scan), back (received) or paid for (no more
        nudging to ship)."""
        on_the_way = [e.return_id for e in self.scanned if is_moving(e.scan_code)]
        return on_the_way + [e.return_id for e in (*self.received, *self.issued)]

    def closed(self) -> list[UUID]:
        return [e.return_id for e in self.cancelled]

    def news(self, now: datetime) -> list[Planned]:
        """The care messages these events ask for, due now, with the template parameters each brings."""
        return [
            *(planned(e, REQUESTED, now, {"tracking_no": e.tracking_no}) for e in self.requested),
            *(planned(e, PARCEL_SEEN, now, _scan_params(e)) for e in self.scanned if is_moving(e.scan_code)),
            *(planned(e, RECEIVED, now, _received_params(e)) for e in self.received),
            # an out-of-stock exchange waiting for a person was told "replacement delayed" already
            *(planned(e, UNDER_REVIEW, now, _money_params(e)) for e in self.escalated if not _conversion_review(e)),
            *(planned(e, REFUND_PAID, now, _money_params(e)) for e in self.issued),
            *(planned(e, REPLACEMENT_DELAYED, now, {}) for e in self.out_of_stock),
            *(planned(e, REPLACEMENT_SHIPPED, now, _shipped_params(e)) for e in self.shipped),
            *(planned(e, REFUND_INSTEAD, now, _money_params(e)) for e in self.decided if is_conversion(e)),
        ]


def reminders(e: ReturnRequested, intervals_s: Sequence[float]) -> list[Planned]:
    """The reminders of a return whose goods must come back (see `needs_reminders`)."""
    return [planned(e, step, due, {}) for step, due in reminder_schedule(e.requested_at, intervals_s)]


# -- time zones and quiet hours ----------------------------------------------------------------------


def zone(name: str | None, default: str = "Asia/Shanghai") -> ZoneInfo:
    for candidate in (name, default, "UTC"):
        if not candidate:
            continue
        try:
            return ZoneInfo(candidate)
        except (ZoneInfoNotFoundError, ValueError):
            continue
    return ZoneInfo("UTC")


def _at_local(day: date, hour: int, tz: ZoneInfo) -> datetime:
    # fold=0 and a round trip through UTC resolve a DST gap or overlap to a real instant
    return datetime.combine(day, time(hour), tzinfo=tz).astimezone(UTC)


@dataclass(frozen=True)
class QuietHours:
    """Local hours during which nothing is sent: [start, end), wrapping midnight when start > end."""

    start: int = 21
    end: int = 8

    def contains_hour(self, hour: int) -> bool:
        if self.start == self.end:
            return False
        if self.start > self.end:
            return hour >= self.start or hour < self.end
        return self.start <= hour < self.end


def quiet_until(now: datetime, tz: ZoneInfo, quiet: QuietHours) -> datetime | None:
    """None when `now` is outside the recipient's quiet hours, else the UTC instant they end."""
    local = now.astimezone(tz)
    if not quiet.contains_hour(local.hour):
        return None
    day = local.date()
    if quiet.start > quiet.end and local.hour >= quiet.start:
        day = day + timedelta(days=1)
    end = _at_local(day, quiet.end, tz)
    if end <= now:  # a DST jump moved the end back before now: wait for the next day's end
        end = _at_local(day + timedelta(days=1), quiet.end, tz)
    return end


def local_day_bounds(now: datetime, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """[start, end) in UTC of the recipient's local calendar day containing `now`."""
    day = now.astimezone(tz).date()
    start = datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz).astimezone(UTC)
    return start, end


def next_morning(now: datetime, tz: ZoneInfo, quiet: QuietHours) -> datetime:
    """The end of quiet hours on the recipient's next local day (where a capped care message waits)."""
    day = now.astimezone(tz).date() + timedelta(days=1)
    return _at_local(day, quiet.end, tz)


# -- opt-out / opt-in keywords -------------------------------------------------------------------------

OPT_OUT_KEYWORDS = frozenset(
    {"STOP", "UNSUBSCRIBE", "END", "QUIT", "STOPALL", "REVOKE", "OPTOUT", "CANCEL", "退订", "TD"}
)
OPT_IN_KEYWORDS = frozenset({"START", "UNSTOP", "YES", "SUBSCRIBE", "订阅"})

_EDGE_PUNCT = re.compile(r"^[\W_]+|[\W_]+$", re.UNICODE)

Keyword = Literal["opt_out", "opt_in"]


def normalize_keyword(text: str) -> str:
    """Full-width to half-width, upper case, trimmed of whitespace and surrounding punctuation."""
    t = unicodedata.normalize("NFKC", text or "").strip().upper()
    return re.sub(r"\s+", " ", _EDGE_PUNCT.sub("", t))


def classify_keyword(text: str) -> Keyword | None:
    """A reply that is exactly one keyword (any case, spacing, punctuation around it) changes the
    number's consent; anything else is an ordinary reply and changes nothing."""
    k = normalize_keyword(text)
    if k in OPT_OUT_KEYWORDS:
        return "opt_out"
    if k in OPT_IN_KEYWORDS:
        return "opt_in"
    return None


def opted_out_after(keywords: Iterable[Keyword | None], initially: bool = False) -> bool:
    """Consent after a sequence of replies: the last keyword wins; other replies change nothing."""
    state = initially
    for k in keywords:
        if k == "opt_out":
            state = True
        elif k == "opt_in":
            state = False
    return state


# -- pacing (GCRA) ---------------------------------------------------------------------------------------


def pace(tat: datetime | None, now: datetime, rate_per_s: float, burst: int = 1) -> tuple[datetime, datetime]:
    """Schedule one send on a sender limited to `rate_per_s` with bursts of `burst`.

    Generic cell rate algorithm: `tat` is the theoretical arrival time of the next send. Returns
    (send_at, new_tat); send_at >= now, and any window of length w holds at most burst + w*rate sends.
    """
    if rate_per_s <= 0 or math.isinf(rate_per_s):
        return now, now
    interval = timedelta(microseconds=math.ceil(1_000_000 / rate_per_s))  # rounded up: never faster
    tat = now if tat is None or tat < now else tat
    tolerance = interval * (max(1, burst) - 1)
    send_at = max(now, tat - tolerance)
    return send_at, tat + interval


# -- decisions ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Send:
    pass


@dataclass(frozen=True)
class Defer:
    until: datetime
    reason: str  # quiet_hours | daily_cap


@dataclass(frozen=True)
class Suppress:
    reason: str  # no_phone | opted_out | return_cancelled | superseded | stale | daily_cap


Decision = Send | Defer | Suppress


@dataclass(frozen=True)
class Pending:
    """A message that is due, with what the rules need to know about it."""

    step: str
    due_at: datetime
    timezone: str


@dataclass(frozen=True)
class Situation:
    now: datetime
    has_phone: bool = True  # the customer gave a number (a Shopify customer may have none)
    opted_out: bool = False
    closed: bool = False
    sent_today: int = 0  # messages to this number already sent (or being sent) in its local day
    sent_steps: frozenset[str] = frozenset()  # steps of this return already sent or being sent
    due_steps: frozenset[str] = frozenset()  # steps of this return due together with this one


@dataclass(frozen=True)
class Rules:
    quiet: QuietHours = QuietHours()
    daily_cap: int = 5
    reminder_stale_s: float = 12 * 3600
    default_timezone: str = "Asia/Shanghai"


def superseded(step: str, sent: Iterable[str], due: Iterable[str] = ()) -> bool:
    """A chain step is pointless once a later chain step was sent; a reminder once any later step of
    the return was sent or is due with it (only the latest of several due reminders goes)."""
    sent = set(sent)
    if is_reminder(step):
        n = reminder_no(step)
        later = sent | set(due)
        return any(
            (is_reminder(s) and reminder_no(s) > n) or (not is_reminder(s) and s in CHAIN and s != REQUESTED)
            for s in later
        )
    if step not in CHAIN:
        return False
    return any(s in CHAIN and CHAIN[s] > CHAIN[step] for s in sent)


def decide(p: Pending, s: Situation, rules: Rules) -> Decision:
    """What to do with a due message now. Order matters: refusals that are final come first."""
    if s.closed:
        return Suppress("return_cancelled")
    if not s.has_phone:
        return Suppress("no_phone")
    if s.opted_out:
        return Suppress("opted_out")
    if superseded(p.step, s.sent_steps, s.due_steps - {p.step}):
        return Suppress("superseded")
    reminder = is_reminder(p.step)
    if reminder and (s.now - p.due_at).total_seconds() > rules.reminder_stale_s:
        return Suppress("stale")
    tz = zone(p.timezone, rules.default_timezone)
    until = quiet_until(s.now, tz, rules.quiet)
    if until is not None:
        return Defer(until, "quiet_hours")
    if rules.daily_cap >= 0 and s.sent_today >= rules.daily_cap:
        # A reminder is only a nudge: the next one comes anyway. A step's news waits for tomorrow.
        return Suppress("daily_cap") if reminder else Defer(next_morning(s.now, tz, rules.quiet), "daily_cap")
    return Send()


def gives_up(attempt: int, max_attempts: int) -> bool:
    """A send that failed for a transient reason is tried again, up to `max_attempts` in all."""
    return attempt >= max_attempts


def undelivered_news(delivered: bool | None, status: str, previous_status: str | None) -> bool:
    """A receipt saying "not delivered" is news once: its repeats (the same status again) are not."""
    return delivered is False and previous_status != status


# -- locale, money, phone numbers ----------------------------------------------------------------------


# -- SMS length: encoding and segments ---------------------------------------------------------------------

# GSM 03.38: the basic set (one septet each) and the extension table (two: escape + char).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENDED = frozenset("^{}\\[~]|€\f")
# Spaces Babel puts in money and times (no-break, narrow no-break, thin, figure) are outside GSM-7: one
# of them turns a whole Latin-script text into UCS-2 (70 characters a segment instead of 160).
_SPACES = str.maketrans({"\u00a0": " ", "\u202f": " ", "\u2009": " ", "\u2007": " "})


def gsm_spaces(text: str) -> str:
    return text.translate(_SPACES)


def sms_encoding(text: str) -> Literal["GSM-7", "UCS-2"]:
    return "GSM-7" if all(c in GSM7_BASIC or c in GSM7_EXTENDED for c in text) else "UCS-2"


def sms_segments(text: str) -> tuple[Literal["GSM-7", "UCS-2"], int]:
    """How a text travels: its encoding and how many SMS segments it takes (GSM-7: 160 septets alone,
    153 a part; UCS-2: 70 UTF-16 units alone, 67 a part)."""
    encoding = sms_encoding(text)
    if encoding == "GSM-7":
        units, single, part = sum(2 if c in GSM7_EXTENDED else 1 for c in text), 160, 153
    else:
        units, single, part = len(text.encode("utf-16-le")) // 2, 70, 67
    return encoding, 1 if units <= single else math.ceil(units / part)


_DIGITS = re.compile(r"\D")


def national_for_aliyun(e164: str) -> str:
    """Aliyun wants mainland numbers as 11 digits and others as country code + number, no '+'."""
    digits = _DIGITS.sub("", e164)
    if digits.startswith("86") and len(digits) == 13:
        return digits[2:]
    return digits
