"""Pure decisions of the warehouse service: which deliveries are the same carrier scan, which scan is
the first to show a parcel moving, who holds a tracking number, whether a receipt is accepted (and if
not, why: 404 / 409 / 422 are decided here, not in SQL), and which stock movements it attests. No I/O."""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import TypeVar
from uuid import UUID

from contracts.events import Condition, Disposition, Movement, Scan, ScanCode, first_moving_scan
from services.warehouse.schemas import (
    AfterShipCheckpoint,
    AfterShipWebhook,
    Kuaidi100Checkpoint,
    Kuaidi100Push,
    OutOfStockBody,
    ReceiptBody,
    ReplacementBody,
    ScanWebhook,
)

MOVEMENT_OF: dict[Disposition, Movement | None] = {
    Disposition.restock: Movement.restock,
    Disposition.destroy: Movement.destroy,
    Disposition.refurbish: Movement.refurbish,
    Disposition.quarantine: None,  # held for a decision: no stock movement yet
}
# Kinds for which goods come back to the warehouse.
PARCEL_KINDS = frozenset({"return_and_refund", "exchange"})

S = TypeVar("S", bound=Scan)


# -- carrier scans ------------------------------------------------------------------------------------


def scan_identity(carrier: str, scan: ScanWebhook) -> str:
    """One id per distinct scan, however often it is delivered: the carrier's id when it sends one,
    else a digest of what makes a scan distinct (carrier, tracking number, code, time)."""
    if scan.scan_id:
        return f"{carrier}:{scan.scan_id}"
    at = scan.scanned_at.astimezone(UTC).isoformat(timespec="microseconds")
    digest = hashlib.sha256(f"{carrier}|{scan.tracking_no}|{scan.scan_code.value}|{at}".encode()).hexdigest()
    return f"{carrier}:{digest[:32]}"


@dataclass(frozen=True)
class CarrierScan:
    """A carrier scan as recorded (parked until its parcel is known, then published)."""

    scan_id: str
    carrier: str
    tracking_no: str
    scan_code: str
    scanned_at: datetime
    location: str | None
    correlation_id: str


@dataclass(frozen=True)
class ScanIntake:
    carrier: str
    scan_id: str
    body: ScanWebhook
    correlation_id: str

    def scan(self) -> CarrierScan:
        b = self.body
        return CarrierScan(
            self.scan_id, self.carrier, b.tracking_no, b.scan_code.value, b.scanned_at, b.location, self.correlation_id
        )


@dataclass(frozen=True)
class ScanResult:
    scan_id: str
    duplicate: bool
    return_id: UUID | None


def distinct_scans(items: Sequence[ScanIntake]) -> list[ScanIntake]:
    """The first delivery of each scan in a batch."""
    first: dict[str, ScanIntake] = {}
    for it in items:
        first.setdefault(it.scan_id, it)
    return list(first.values())


def match_scans(scans: Iterable[CarrierScan], parcels: dict[str, UUID]) -> dict[UUID, list[CarrierScan]]:
    """Scans whose tracking number a parcel holds, per return (the others stay parked)."""
    matches: dict[UUID, list[CarrierScan]] = {}
    for s in scans:
        rid = parcels.get(s.tracking_no)
        if rid is not None:
            matches.setdefault(rid, []).append(s)
    return matches


def scan_results(items: Sequence[ScanIntake], inserted: set[str], matched: dict[str, UUID | None]) -> list[ScanResult]:
    """Each delivery's answer: a duplicate unless it recorded its scan first; the return it matched."""
    seen: set[str] = set()
    out = []
    for it in items:
        duplicate = it.scan_id not in inserted or it.scan_id in seen
        seen.add(it.scan_id)
        out.append(ScanResult(it.scan_id, duplicate, matched.get(it.scan_id)))
    return out


def first_moving(already_moving: bool, scans: Sequence[Scan]) -> str | None:
    """Of scans being published now for one parcel, the one to mark as the first showing it moving:
    none if an earlier publication already did; else the first moving one (contracts' definition)."""
    if already_moving:
        return None
    first = first_moving_scan(scans)
    return first.scan_id if first is not None else None


def publication_order(scans: Iterable[S]) -> list[S]:
    return sorted(scans, key=lambda s: (s.scanned_at, s.scan_id))


# -- courier tracking feeds (docs/couriers.md holds the same tables) ------------------------------------

# Kuaidi100's states: code -> (its documented name, returnflow's scan code). The one- and two-digit codes
# are the main states every push carries (`lastResult.state`); the longer ones are the detailed states a
# subscription with resultv2=4 adds per checkpoint (`statusCode`), each under its main state.
KUAIDI100_STATES: dict[str, tuple[str, ScanCode]] = {
    "1": ("揽收", ScanCode.picked_up),
    "101": ("已下单", ScanCode.accepted),  # ordered: the courier knows of it, nothing picked up yet
    "102": ("待揽收", ScanCode.accepted),
    "103": ("已揽收", ScanCode.picked_up),
    "0": ("在途", ScanCode.in_transit),
    "1001": ("到达派件城市", ScanCode.in_transit),
    "1002": ("干线", ScanCode.in_transit),
    "1003": ("转递", ScanCode.in_transit),
    "5": ("派件", ScanCode.out_for_delivery),
    "501": ("投柜或驿站", ScanCode.out_for_delivery),  # in a locker or station, waiting to be collected
    "3": ("签收", ScanCode.delivered),
    "301": ("本人签收", ScanCode.delivered),
    "302": ("派件异常后签收", ScanCode.delivered),
    "303": ("代签", ScanCode.delivered),
    "304": ("投柜或站签收", ScanCode.delivered),
    "2": ("疑难", ScanCode.exception),
    "201": ("超时未签收", ScanCode.exception),
    "202": ("超时未更新", ScanCode.exception),
    "203": ("拒收", ScanCode.exception),
    "204": ("派件异常", ScanCode.exception),
    "205": ("柜或驿站超时未取", ScanCode.exception),
    "206": ("无法联系", ScanCode.exception),
    "207": ("超区", ScanCode.exception),
    "208": ("滞留", ScanCode.exception),
    "209": ("破损", ScanCode.exception),
    "4": ("退签", ScanCode.exception),
    "401": ("已销单", ScanCode.exception),
    "6": ("退回", ScanCode.exception),  # going back to the sender (the customer): not towards the warehouse
    "7": ("转投", ScanCode.in_transit),  # handed to another courier, still moving
    "8": ("清关", ScanCode.in_transit),
    "10": ("待清关", ScanCode.in_transit),
    "11": ("清关中", ScanCode.in_transit),
    "12": ("已清关", ScanCode.in_transit),
    "13": ("清关异常", ScanCode.exception),
    "14": ("拒签", ScanCode.exception),
}
# A checkpoint names its state (`status`) with these names; 转单 is an older name of 转投.
KUAIDI100_NAMES: dict[str, str] = {name: code for code, (name, _) in KUAIDI100_STATES.items()} | {"转单": "7"}

# AfterShip's delivery tags, and the subtags that say more than their tag.
AFTERSHIP_TAGS: dict[str, ScanCode | None] = {
    "Pending": None,  # AfterShip has no information yet: not a scan
    "InfoReceived": ScanCode.accepted,  # the label exists, the courier has not got the parcel
    "InTransit": ScanCode.in_transit,
    "OutForDelivery": ScanCode.out_for_delivery,
    "AvailableForPickup": ScanCode.out_for_delivery,
    "Delivered": ScanCode.delivered,
    "AttemptFail": ScanCode.exception,
    "Exception": ScanCode.exception,
    "Expired": ScanCode.exception,  # no news for 30 days
}
AFTERSHIP_SUBTAGS: dict[str, ScanCode] = {
    "InTransit_002": ScanCode.picked_up,  # "Shipment accepted by carrier": the acceptance (pick-up) scan
}

KUAIDI100_TZ = timezone(timedelta(hours=8))  # Kuaidi100's times are Beijing time, without an offset


def kuaidi100_scan_code(state: str | None) -> ScanCode | None:
    """A Kuaidi100 state, by code or by name; None when it is not a known state."""
    if state is None:
        return None
    code = KUAIDI100_NAMES.get(state.strip(), state.strip())
    found = KUAIDI100_STATES.get(code)
    return found[1] if found else None


def aftership_scan_code(tag: str, subtag: str | None) -> ScanCode | None:
    """An AfterShip tag (refined by its subtag where the table says so); None: not a scan."""
    if subtag in AFTERSHIP_SUBTAGS:
        return AFTERSHIP_SUBTAGS[subtag]
    return AFTERSHIP_TAGS.get(tag)


@dataclass(frozen=True)
class FeedScan:
    """A provider's checkpoint as a carrier scan: its id (the same checkpoint pushed again has the same
    id), the courier, and the scan as the native webhook would carry it."""

    scan_id: str
    carrier: str
    body: ScanWebhook


@dataclass(frozen=True)
class FeedScans:
    scans: list[FeedScan]
    unmapped: list[str]  # each checkpoint that is not a scan: `<where>: <state>` for the log


def checkpoint_id(provider: str, *parts: str) -> str:
    """A checkpoint carries no id of its own: a digest of what makes it distinct (never of the courier
    code, which a provider may correct later)."""
    return f"{provider}:{hashlib.sha256(chr(31).join(parts).encode()).hexdigest()[:32]}"


def _short(text: str | None) -> str | None:
    return text[:200] if text else None


def kuaidi100_time(c: Kuaidi100Checkpoint) -> datetime:
    at = datetime.fromisoformat((c.ftime or c.time or "").strip())  # checked at the edge (schemas)
    return at if at.tzinfo is not None else at.replace(tzinfo=KUAIDI100_TZ)


def kuaidi100_checkpoint_code(push: Kuaidi100Push, i: int) -> ScanCode | None:
    """A checkpoint's scan code: its detailed state, else its state's name, else (the newest one only)
    the parcel's current state."""
    c = push.lastResult.data[i]
    current = push.lastResult.state if i == 0 else None
    for state in (c.statusCode, c.status, current):
        code = kuaidi100_scan_code(state)
        if code is not None:
            return code
    return None


def kuaidi100_scans(push: Kuaidi100Push) -> FeedScans:
    """Each checkpoint of a push (the whole history, newest first) as a scan."""
    r = push.lastResult
    scans, unmapped = [], []
    for i, c in enumerate(r.data):
        code = kuaidi100_checkpoint_code(push, i)
        if code is None:
            unmapped.append(f"lastResult.data.{i}: {c.statusCode or c.status or r.state}")
            continue
        at = kuaidi100_time(c)
        body = ScanWebhook.model_construct(
            tracking_no=r.nu, scan_code=code, scanned_at=at, location=_short(c.areaName or c.location), scan_id=None
        )
        scans.append(FeedScan(checkpoint_id("kuaidi100", r.nu, at.isoformat(), c.context), r.com, body))
    return FeedScans(scans, unmapped)


def aftership_time(c: AfterShipCheckpoint) -> datetime | None:
    """The carrier's time when it carries an offset; else when AfterShip recorded it (UTC)."""
    if c.checkpoint_time:
        try:
            at = datetime.fromisoformat(c.checkpoint_time)
        except ValueError:
            at = None
        if at is not None and at.tzinfo is not None:
            return at
    return c.created_at if c.created_at is not None and c.created_at.tzinfo is not None else None


def aftership_scans(hook: AfterShipWebhook) -> FeedScans:
    m = hook.msg
    scans, unmapped = [], []
    for i, c in enumerate(m.checkpoints):
        code = aftership_scan_code(c.tag, c.subtag)
        at = aftership_time(c)
        if code is None or at is None:
            unmapped.append(f"msg.checkpoints.{i}: {c.subtag or c.tag}" + ("" if at else " (no time with an offset)"))
            continue
        where = _short(c.location if isinstance(c.location, str) and c.location else c.city)
        body = ScanWebhook.model_construct(
            tracking_no=m.tracking_number, scan_code=code, scanned_at=at, location=where, scan_id=None
        )
        ident = checkpoint_id("aftership", m.tracking_number, at.isoformat(), c.message)
        scans.append(FeedScan(ident, m.slug, body))
    return FeedScans(scans, unmapped)


F = TypeVar("F", bound=FeedScan)


def new_checkpoints(scans: Iterable[F], recorded: Collection[str]) -> list[F]:
    """The checkpoints not recorded before, each once (providers push a parcel's whole history again)."""
    seen = set(recorded)
    out = []
    for s in scans:
        if s.scan_id not in seen:
            seen.add(s.scan_id)
            out.append(s)
    return out


# -- Kuaidi100 subscriptions -------------------------------------------------------------------------------

# returnflow's carrier slugs -> Kuaidi100's company codes; a carrier not listed (or none) is subscribed
# with autoCom=1 (Kuaidi100 recognises the courier from the number), a code already Kuaidi100's is kept.
KUAIDI100_COMPANIES: dict[str, str] = {
    "sf": "shunfeng",
    "yto": "yuantong",
    "zto": "zhongtong",
    "sto": "shentong",
    "yd": "yunda",
    "yunda": "yunda",
    "jd": "jd",
    "ems": "ems",
    "jt": "jtexpress",
    "db": "debangkuaidi",
}
KUAIDI100_COMPANY_CODES = frozenset(KUAIDI100_COMPANIES.values()) | {"shunfeng", "yuantong", "zhongtong", "shentong"}


def kuaidi100_subscription(
    tracking_no: str, carrier: str | None, key: str, callback_url: str, salt: str
) -> dict[str, object]:
    """The `param` of a subscription: every checkpoint with its detailed state (resultv2=4)."""
    company = KUAIDI100_COMPANIES.get(carrier or "")
    if company is None and carrier in KUAIDI100_COMPANY_CODES:
        company = carrier
    parameters: dict[str, str] = {"callbackurl": callback_url, "salt": salt, "resultv2": "4"}
    if company is None:
        parameters["autoCom"] = "1"
    return {"company": company or "", "number": tracking_no, "key": key, "parameters": parameters}


@dataclass(frozen=True)
class DueSubscription:
    tracking_no: str
    carrier: str | None
    attempts: int
    correlation_id: str | None


@dataclass(frozen=True)
class Subscribed:
    pass


@dataclass(frozen=True)
class SubscribeLater:
    error: str


@dataclass(frozen=True)
class SubscriptionRefused:
    error: str


SubscriptionOutcome = Subscribed | SubscribeLater | SubscriptionRefused
# returnCode: 200 submitted, 501 already subscribed; 500/502/503 Kuaidi100's trouble, 600/601 the key is
# refused or expired (fixed by the operator, then the pending numbers go through); the rest (400 data
# incomplete, 700-702 a number or courier it cannot track) will not change by asking again.
KUAIDI100_SUBSCRIBED = frozenset({"200", "501"})
KUAIDI100_RETRY = frozenset({"500", "502", "503", "600", "601"})


def subscription_outcome(http_status: int | None, answer: dict[str, object] | None) -> SubscriptionOutcome:
    """Kuaidi100's answer to a subscription (http_status None: no answer at all)."""
    if http_status is None or http_status >= 500 or http_status == 429 or answer is None:
        return SubscribeLater(f"no usable answer (HTTP {http_status})")
    code, message = str(answer.get("returnCode", "")), str(answer.get("message", ""))
    if code in KUAIDI100_SUBSCRIBED:
        return Subscribed()
    if code in KUAIDI100_RETRY:
        return SubscribeLater(f"{code} {message}".strip())
    return SubscriptionRefused(f"{code or http_status} {message}".strip())


def subscription_retry_in(attempts: int, base_s: float) -> float:
    """Seconds before asking again after `attempts` tries: base_s doubling, at most an hour."""
    return min(base_s * 2 ** min(max(attempts - 1, 0), 20), 3600.0)


# -- tracking numbers ------------------------------------------------------------------------------------


def claim_tracking_numbers(holders: dict[str, UUID], claims: Sequence[tuple[UUID, str | None]]) -> list[str | None]:
    """For each (return, tracking number) claimed in order, the number granted: a number another
    return holds is never silently re-pointed (None), nor is a missing one."""
    held = dict(holders)
    granted: list[str | None] = []
    for rid, tracking_no in claims:
        holder = held.get(tracking_no) if tracking_no is not None else None
        if tracking_no is None or (holder is not None and holder != rid):
            granted.append(None)
            continue
        held[tracking_no] = rid
        granted.append(tracking_no)
    return granted


# -- receipts -------------------------------------------------------------------------------------------


def receipt_fingerprint(body: ReceiptBody) -> str:
    """What must match for a repeated receipt to count as the same one."""
    lines = sorted(
        (x.sku, x.qty_received, x.condition.value, x.disposition.value if x.disposition else "") for x in body.lines
    )
    return hashlib.sha256(repr((body.inspector_id, lines)).encode()).hexdigest()


@dataclass(frozen=True)
class ExpectedLine:
    sku: str
    qty: int
    unit_price: int
    replacement_sku: str | None = None  # exchange: the SKU sent instead (None: the same SKU)


def requested_by_sku(expected: Sequence[ExpectedLine]) -> dict[str, tuple[int, int]]:
    """sku -> (quantity requested over all lines, unit price). A SKU listed twice at different prices
    is valued at its lowest price (a receipt counts units per SKU, not per request line)."""
    out: dict[str, tuple[int, int]] = {}
    for line in expected:
        qty, price = out.get(line.sku, (0, line.unit_price))
        out[line.sku] = (qty + line.qty, min(price, line.unit_price))
    return out


def receipt_errors(expected: Sequence[ExpectedLine], body: ReceiptBody) -> list[dict[str, str]]:
    """Field errors of a receipt against what the return requested ([] when it fits)."""
    requested = requested_by_sku(expected)
    return [
        *(e for i in range(len(body.lines)) for e in _line_errors(requested, body, i)),
        *_over_received(requested, body),
        *_unaccounted(requested, body),
    ]


def _line_errors(requested: dict[str, tuple[int, int]], body: ReceiptBody, i: int) -> list[dict[str, str]]:
    line, where = body.lines[i], f"lines.{i}"
    if line.sku not in requested:
        return [
            {"field": f"{where}.sku", "message": f"SKU {line.sku!r} is not in this return ({', '.join(requested)})"}
        ]
    errors = []
    if line.condition == Condition.missing and line.qty_received != 0:
        errors.append({"field": f"{where}.qty_received", "message": "a missing line has qty_received 0"})
    if line.condition != Condition.missing and line.qty_received == 0:
        errors.append({"field": f"{where}.condition", "message": "nothing received: use condition 'missing'"})
    if line.qty_received > 0 and line.disposition is None:
        errors.append({"field": f"{where}.disposition", "message": "required when goods were received"})
    return errors


def _over_received(requested: dict[str, tuple[int, int]], body: ReceiptBody) -> list[dict[str, str]]:
    """More of a SKU received than requested: reported once per SKU, at its first line."""
    received: dict[str, int] = {}
    for line in body.lines:
        if line.sku in requested:
            received[line.sku] = received.get(line.sku, 0) + line.qty_received
    errors, reported = [], set()
    for i, line in enumerate(body.lines):
        sku = line.sku
        if sku in requested and sku not in reported and received[sku] > requested[sku][0]:
            errors.append(
                {
                    "field": f"lines.{i}.qty_received",
                    "message": f"{received[sku]} x {sku} received but the return requested "
                    f"{requested[sku][0]}: record extra goods separately",
                }
            )
            reported.add(sku)
    return errors


def _unaccounted(requested: dict[str, tuple[int, int]], body: ReceiptBody) -> list[dict[str, str]]:
    named = {line.sku for line in body.lines}
    missing = [sku for sku in requested if sku not in named]
    if not missing:
        return []
    return [
        {
            "field": "lines",
            "message": f"requested SKU(s) {', '.join(missing)} not recorded: "
            "add them (condition 'missing' when they did not arrive)",
        }
    ]


@dataclass(frozen=True)
class ReceivedLineOut:
    sku: str
    qty_requested: int
    qty_received: int
    unit_price: int
    condition: Condition
    disposition: Disposition


def received_lines(expected: Sequence[ExpectedLine], body: ReceiptBody) -> list[ReceivedLineOut]:
    """The lines of the return-received event: one per receipt line (same SKU, condition and
    disposition merged); qty_requested is the SKU's requested total."""
    requested = requested_by_sku(expected)
    merged: dict[tuple[str, Condition, Disposition], int] = {}
    for line in body.lines:
        disposition = line.disposition or Disposition.quarantine
        k = (line.sku, line.condition, disposition)
        merged[k] = merged.get(k, 0) + line.qty_received
    return [
        ReceivedLineOut(sku, requested[sku][0], qty, requested[sku][1], condition, disposition)
        for (sku, condition, disposition), qty in merged.items()
    ]


def stock_movements(lines: Sequence[ReceivedLineOut]) -> list[tuple[str, Movement, int]]:
    """(sku, movement, quantity) the warehouse attests: one per SKU and movement with goods in it."""
    out: dict[tuple[str, Movement], int] = {}
    for line in lines:
        movement = MOVEMENT_OF[line.disposition]
        if movement is not None and line.qty_received > 0:
            out[(line.sku, movement)] = out.get((line.sku, movement), 0) + line.qty_received
    return [(sku, movement, qty) for (sku, movement), qty in out.items()]


# -- whether a receipt is accepted ---------------------------------------------------------------------


@dataclass(frozen=True)
class Parcel:
    """What deciding a receipt needs of a parcel."""

    requested: bool
    kind: str | None


@dataclass
class KnownReceipts:
    """Receipts recorded before (and accepted earlier in the same batch)."""

    by_return: dict[UUID, tuple[str, str]] = field(default_factory=dict)  # return -> (receipt id, fingerprint)
    return_of: dict[str, UUID] = field(default_factory=dict)  # receipt id -> return

    def add(self, receipt_id: str, return_id: UUID, fingerprint: str) -> None:
        self.by_return[return_id] = (receipt_id, fingerprint)
        self.return_of[receipt_id] = return_id


@dataclass(frozen=True)
class NoParcelExpected:  # 404
    reference: str


@dataclass(frozen=True)
class NoGoodsExpected:  # 409: a refund-only return
    return_id: UUID
    kind: str | None


@dataclass(frozen=True)
class SameReceiptAgain:  # 200: the same receipt sent again
    receipt_id: str
    return_id: UUID


@dataclass(frozen=True)
class SecondReceipt:  # 409: never merged or overwritten
    receipt_id: str
    return_id: UUID


@dataclass(frozen=True)
class ReceiptIdTaken:  # 409: the device's receipt id names another return's receipt
    receipt_id: str


@dataclass(frozen=True)
class DoesNotFit:  # 422
    fields: list[dict[str, str]]


@dataclass(frozen=True)
class AcceptReceipt:
    return_id: UUID
    lines: list[ReceivedLineOut]


ReceiptRefusal = NoParcelExpected | NoGoodsExpected | SameReceiptAgain | SecondReceipt | ReceiptIdTaken | DoesNotFit
ReceiptDecision = ReceiptRefusal | AcceptReceipt


def decide_receipt(
    return_id: UUID | None,
    parcel: Parcel | None,
    expected: Sequence[ExpectedLine],
    known: KnownReceipts,
    body: ReceiptBody,
    fingerprint: str,
) -> ReceiptDecision:
    """One receipt per requested parcel that expects goods back, fitting what was requested; the
    same receipt sent again is harmless, a different second one is refused."""
    if return_id is None or parcel is None or not parcel.requested:
        return NoParcelExpected(body.reference)
    if parcel.kind not in PARCEL_KINDS:
        return NoGoodsExpected(return_id, parcel.kind)
    if return_id in known.by_return:
        receipt_id, known_fingerprint = known.by_return[return_id]
        if body.receipt_id == receipt_id and known_fingerprint == fingerprint:
            return SameReceiptAgain(receipt_id, return_id)
        return SecondReceipt(receipt_id, return_id)
    if body.receipt_id and body.receipt_id in known.return_of:
        return ReceiptIdTaken(body.receipt_id)
    errors = receipt_errors(expected, body)
    if errors:
        return DoesNotFit(errors)
    return AcceptReceipt(return_id, received_lines(expected, body))


@dataclass(frozen=True)
class Receipt:
    """An accepted receipt, as recorded and published."""

    receipt_id: str
    return_id: UUID
    warehouse_id: str
    device_id: str
    inspector_id: str
    received_at: datetime
    fingerprint: str
    correlation_id: str
    lines: list[ReceivedLineOut]


@dataclass(frozen=True)
class ReceiptIntake:
    device_id: str
    warehouse_id: str
    body: ReceiptBody
    fingerprint: str
    correlation_id: str


@dataclass(frozen=True)
class ReceiptAccepted:  # 201
    receipt_id: str
    return_id: UUID


ReceiptOutcome = ReceiptRefusal | ReceiptAccepted


# -- an exchange's replacement: shipped once, delivered by the outgoing parcel's scans -------------------


def replacement_wanted(expected: Sequence[ExpectedLine]) -> dict[str, int]:
    """What the exchange asked for: replacement SKU -> quantity (a line naming no replacement SKU wants
    the same SKU again)."""
    out: dict[str, int] = {}
    for line in expected:
        sku = line.replacement_sku or line.sku
        out[sku] = out.get(sku, 0) + line.qty
    return out


def replacement_errors(expected: Sequence[ExpectedLine], lines: Sequence[tuple[str, int]]) -> list[dict[str, str]]:
    """Field errors of a shipment's (sku, qty) lines against the exchange request ([] when it matches):
    an unknown SKU at its line, a SKU's total quantity off at its first line, a SKU left out at `lines`."""
    wanted = replacement_wanted(expected)
    names = ", ".join(wanted)
    sent: dict[str, int] = {}
    errors: list[dict[str, str]] = []
    for i, (sku, qty) in enumerate(lines):
        if sku not in wanted:
            errors.append(
                {"field": f"lines.{i}.sku", "message": f"SKU {sku!r} is not what the exchange asked for ({names})"}
            )
        else:
            sent[sku] = sent.get(sku, 0) + qty
    reported: set[str] = set()
    for i, (sku, _) in enumerate(lines):
        if sku in sent and sku not in reported and sent[sku] != wanted[sku]:
            errors.append(
                {"field": f"lines.{i}.qty", "message": f"{sent[sku]} x {sku} but the exchange asked for {wanted[sku]}"}
            )
            reported.add(sku)
    left_out = [sku for sku in wanted if sku not in sent]
    if left_out:
        errors.append({"field": "lines", "message": f"the exchange also asked for {', '.join(left_out)}"})
    return errors


def shipment_fingerprint(body: ReplacementBody) -> str:
    """What must match for a repeated shipment to count as the same one."""
    lines = sorted((x.sku, x.qty) for x in body.lines)
    return hashlib.sha256(repr((body.carrier, body.tracking_no, body.packed_by, lines)).encode()).hexdigest()


@dataclass(frozen=True)
class ShipmentFacts:
    """What deciding a replacement shipment needs to know of its exchange (its parcel row locked)."""

    requested: bool
    kind: str | None
    cancelled: bool
    received: bool
    shipped: tuple[str, str] | None  # (shipment id, fingerprint) of the exchange's shipment
    shipment_id_of: UUID | None  # the return whose shipment has the request's shipment id
    tracking_of: UUID | None  # the return whose parcel (either way) has the request's tracking number
    converted: bool = False  # a person converted the exchange to a refund
    released: bool = False  # the shop ships it at the first moving scan: released before receipt


@dataclass(frozen=True)
class NotAnExchange:  # 409
    return_id: UUID
    kind: str | None


@dataclass(frozen=True)
class ExchangeClosed:  # 409: cancelled, or its goods neither received nor the replacement released early
    return_id: UUID
    reason: str


@dataclass(frozen=True)
class SameShipmentAgain:  # 200: the same answer as the first time
    shipment_id: str
    return_id: UUID
    tracking_no: str


@dataclass(frozen=True)
class SecondShipment:  # 409: at most one replacement per exchange
    shipment_id: str
    return_id: UUID


@dataclass(frozen=True)
class ShipmentIdTaken:  # 409
    shipment_id: str


@dataclass(frozen=True)
class ShipReplacement:
    return_id: UUID


ShipmentRefusal = NoParcelExpected | NotAnExchange | ExchangeClosed | SameShipmentAgain | SecondShipment
ShipmentDecision = ShipmentRefusal | ShipmentIdTaken | DoesNotFit | ShipReplacement


def decide_shipment(
    f: ShipmentFacts | None, expected: Sequence[ExpectedLine], body: ReplacementBody, fingerprint: str
) -> ShipmentDecision:
    """One replacement per exchange whose goods were received (or whose replacement refunds released at the
    parcel's first moving scan), matching what it asked for; the same shipment sent again is harmless, a
    different second one is refused."""
    rid = body.return_id
    if f is None or not f.requested:
        return NoParcelExpected(f"return {rid}")
    if f.kind != "exchange":
        return NotAnExchange(rid, f.kind)
    if f.shipped is not None:
        shipment_id, known = f.shipped
        if known == fingerprint and body.shipment_id in (None, shipment_id):
            return SameShipmentAgain(shipment_id, rid, body.tracking_no)
        return SecondShipment(shipment_id, rid)
    if f.cancelled:
        return ExchangeClosed(rid, "the exchange was cancelled")
    if f.converted:
        return ExchangeClosed(rid, "the exchange was converted to a refund")
    if not f.received and not f.released:
        return ExchangeClosed(rid, "its goods have not been received yet")
    if body.shipment_id and f.shipment_id_of not in (None, rid):
        return ShipmentIdTaken(body.shipment_id)
    errors = replacement_errors(expected, [(x.sku, x.qty) for x in body.lines])
    if f.tracking_of is not None:  # the return's own inbound parcel included: one parcel per number
        errors.append({"field": "tracking_no", "message": f"{body.tracking_no} already names another parcel"})
    return DoesNotFit(errors) if errors else ShipReplacement(rid)


@dataclass(frozen=True)
class Replacement:
    """A replacement shipment as recorded and published."""

    shipment_id: str
    return_id: UUID
    warehouse_id: str
    device_id: str
    packed_by: str
    carrier: str
    tracking_no: str
    shipped_at: datetime
    fingerprint: str
    correlation_id: str
    lines: list[tuple[str, int]]


@dataclass(frozen=True)
class ShipmentAccepted:  # 201
    shipment_id: str
    return_id: UUID
    tracking_no: str


ShipmentOutcome = ShipmentRefusal | ShipmentIdTaken | DoesNotFit | ShipmentAccepted


def replacement_movements(r: Replacement) -> list[tuple[str, Movement, int]]:
    """(sku, movement, quantity) the warehouse attests when a replacement leaves stock: one per SKU."""
    out: dict[str, int] = {}
    for sku, qty in r.lines:
        out[sku] = out.get(sku, 0) + qty
    return [(sku, Movement.replacement_out, qty) for sku, qty in out.items()]


def delivery_scan(already_delivered: bool, scans: Sequence[S]) -> S | None:
    """Of the outgoing parcel's scans being matched now, the one that marks it delivered: the earliest
    `delivered` scan (scan id breaks a tie), none if it was marked before."""
    if already_delivered:
        return None
    delivered = [s for s in scans if s.scan_code == ScanCode.delivered]
    return min(delivered, key=lambda s: (s.scanned_at, s.scan_id), default=None)


@dataclass(frozen=True)
class OutOfStockAccepted:  # 201
    return_id: UUID


@dataclass(frozen=True)
class OutOfStockAgain:  # 200: reported before
    return_id: UUID


@dataclass(frozen=True)
class AlreadyShipped:  # 409
    return_id: UUID
    shipment_id: str


OutOfStockOutcome = (
    NoParcelExpected | NotAnExchange | AlreadyShipped | DoesNotFit | OutOfStockAgain | OutOfStockAccepted
)


def decide_out_of_stock(
    f: ShipmentFacts | None, expected: Sequence[ExpectedLine], reported: bool, body: OutOfStockBody
) -> OutOfStockOutcome:
    """An exchange whose replacement is not in stock is reported once (again: harmless), never after
    its replacement shipped; the SKUs must be ones it asked for."""
    rid = body.return_id
    if f is None or not f.requested:
        return NoParcelExpected(f"return {rid}")
    if f.kind != "exchange":
        return NotAnExchange(rid, f.kind)
    if f.shipped is not None:
        return AlreadyShipped(rid, f.shipped[0])
    if reported:
        return OutOfStockAgain(rid)
    wanted = replacement_wanted(expected)
    errors = [
        {"field": f"skus.{i}", "message": f"SKU {sku!r} is not what the exchange asked for ({', '.join(wanted)})"}
        for i, sku in enumerate(body.skus)
        if sku not in wanted
    ]
    return DoesNotFit(errors) if errors else OutOfStockAccepted(rid)
