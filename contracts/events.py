"""Events and commands on Kafka. JSON values; key = return id; money in integer minor units.

Every message carries event_id, type, version, occurred_at, return_id and correlation_id.
Adding an optional field is compatible; removing a field, narrowing a type or adding a
required field is not (see contracts.compat and tests/unit/test_contracts.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, Protocol, TypeVar
from uuid import UUID, uuid4

from pydantic import BaseModel, ConfigDict, Field

Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code")]
MinorUnits = Annotated[int, Field(ge=0, description="money in integer minor units (fen, cents)")]
Sku = Annotated[str, Field(min_length=1, max_length=64)]


class ReturnKind(StrEnum):
    refund_only = "refund_only"
    return_and_refund = "return_and_refund"
    exchange = "exchange"


class ScanCode(StrEnum):
    accepted = "accepted"
    picked_up = "picked_up"
    in_transit = "in_transit"
    out_for_delivery = "out_for_delivery"
    delivered = "delivered"
    exception = "exception"


MOVING_SCAN_CODES = frozenset({ScanCode.picked_up, ScanCode.in_transit, ScanCode.out_for_delivery, ScanCode.delivered})


def is_moving(scan_code: ScanCode | str) -> bool:
    """Does a scan with this code show the parcel moving (picked up or later)? The one definition every
    service uses: warehouse marks the first such scan, refunds may refund early on it, notify stops
    the reminders to ship."""
    return scan_code in MOVING_SCAN_CODES


class Scan(Protocol):
    """What deciding "the first moving scan" needs of a scan (a ParcelScanned, a stored scan row, ...)."""

    @property
    def scan_id(self) -> str: ...
    @property
    def scan_code(self) -> str: ...
    @property
    def scanned_at(self) -> datetime: ...


S = TypeVar("S", bound=Scan)


def first_moving_scan(scans: Iterable[S]) -> S | None:
    """Of one parcel's scans, the first that shows it moving: the earliest moving scan by scan time (the
    scan id breaks a tie), whatever order the scans arrived in. None when none is moving."""
    moving = [s for s in scans if is_moving(s.scan_code)]
    return min(moving, key=lambda s: (s.scanned_at, s.scan_id), default=None)


class Condition(StrEnum):
    as_described = "as_described"
    damaged = "damaged"
    wrong_item = "wrong_item"
    missing = "missing"


class Disposition(StrEnum):
    restock = "restock"
    destroy = "destroy"
    refurbish = "refurbish"
    quarantine = "quarantine"


class Movement(StrEnum):
    restock = "restock"
    destroy = "destroy"
    refurbish = "refurbish"
    relist = "relist"
    delist = "delist"
    replacement_out = "replacement_out"  # an exchange's replacement leaving stock for the customer


class RefundBasis(StrEnum):
    agent_authority = "agent_authority"
    refund_only = "refund_only"
    early_scan = "early_scan"
    warehouse_receipt = "warehouse_receipt"
    exchange_conversion = "exchange_conversion"  # an exchange a person turned into a refund


class Role(StrEnum):
    agent = "agent"
    supervisor = "supervisor"
    manager = "manager"
    owner = "owner"


class Message(BaseModel):
    """Envelope fields common to every event and command."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    TYPE: ClassVar[str] = ""

    event_id: UUID = Field(default_factory=uuid4)
    type: str
    version: int = 1
    occurred_at: datetime
    return_id: UUID
    correlation_id: str = Field(min_length=1, max_length=128)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)


Event = Message


class Customer(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    id: str
    phone: str | None = Field(
        default=None,
        description="E.164; only services that send SMS use it in full. None: the customer has no phone (the SMS "
        "steps are skipped, reason no_phone)",
    )
    locale: str = "zh-CN"
    timezone: str = "Asia/Shanghai"


class ReturnLine(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    sku: Sku
    qty: int = Field(ge=1)
    unit_price: MinorUnits
    reason: str
    note: str | None = None
    replacement_sku: Sku | None = Field(
        default=None, description="exchange: the SKU sent in exchange (a size or colour); none: the same SKU"
    )


class RequestedBy(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    type: Literal["customer", "agent"]
    agent_id: str | None = None


class ReturnRequested(Message):
    TYPE: ClassVar[str] = "return.requested"
    type: Literal["return.requested"] = "return.requested"
    shop_id: str
    platform: str
    platform_return_id: str
    order_id: str
    kind: ReturnKind
    customer: Customer
    currency: Currency
    paid_total: MinorUnits
    lines: list[ReturnLine]
    tracking_no: str | None = None
    requested_by: RequestedBy
    requested_at: datetime
    shop_name: str | None = Field(default=None, description="the shop's display name (SMS signature)")
    payment_reference: str | None = Field(
        default=None,
        max_length=255,
        description="the order's payment at its provider (e.g. a Stripe PaymentIntent pi_… or charge ch_…): "
        "refunds go back to it; without one the order id is used",
    )


class ReturnCancelled(Message):
    TYPE: ClassVar[str] = "return.cancelled"
    type: Literal["return.cancelled"] = "return.cancelled"
    reason: str | None = None
    cancelled_by: str = "customer"


class TrackingRegistered(Message):
    TYPE: ClassVar[str] = "return.tracking_registered"
    type: Literal["return.tracking_registered"] = "return.tracking_registered"
    tracking_no: str
    carrier: str | None = None


class ParcelScanned(Message):
    TYPE: ClassVar[str] = "parcel.scanned"
    type: Literal["parcel.scanned"] = "parcel.scanned"
    scan_id: str
    tracking_no: str
    carrier: str
    scan_code: ScanCode
    scanned_at: datetime
    location: str | None = None
    first_moving: bool = Field(description="the first scan that shows the parcel moving")


class ReceivedLine(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    sku: Sku
    qty_requested: int = Field(ge=0)
    qty_received: int = Field(ge=0)
    unit_price: MinorUnits
    condition: Condition
    disposition: Disposition


class ReturnReceived(Message):
    TYPE: ClassVar[str] = "return.received"
    type: Literal["return.received"] = "return.received"
    receipt_id: str
    warehouse_id: str
    inspector_id: str
    received_at: datetime
    lines: list[ReceivedLine]


class InventoryAttested(Message):
    """One side of a dual check: the warehouse's physical record of a stock movement."""

    TYPE: ClassVar[str] = "inventory.attested"
    type: Literal["inventory.attested"] = "inventory.attested"
    attestation_id: str
    source: Literal["warehouse", "returns_team"]
    sku: Sku
    movement: Movement
    quantity: int = Field(ge=0)
    attested_by: str
    attested_at: datetime


class InventoryCheck(Message):
    """Command: the returns team's side of a dual check (`inventory.checks`)."""

    TYPE: ClassVar[str] = "inventory.check"
    type: Literal["inventory.check"] = "inventory.check"
    check_id: str
    sku: Sku
    movement: Movement
    quantity: int = Field(ge=0)
    checked_by: str
    checked_at: datetime
    signature: str | None = Field(
        default=None,
        description="Ed25519 signature (standard base64) by `checked_by` over the canonical form: this JSON object "
        "without `signature`, keys sorted, no whitespace, UTF-8. Required by the consumer; optional in the "
        "schema only so that older producers still validate (their commands are refused, recorded).",
    )


class MovementVerified(Message):
    TYPE: ClassVar[str] = "inventory.verified"
    type: Literal["inventory.verified"] = "inventory.verified"
    sku: Sku
    movement: Movement
    quantity: int
    warehouse_attested_by: str
    returns_team_checked_by: str
    warehouse_attestation_id: str | None = None
    returns_team_check_id: str | None = None
    audit_seq: int | None = Field(default=None, description="sequence number of the audit-log entry")
    audit_hash: str | None = Field(default=None, description="hash of that entry: an external anchor of the chain")


DiscrepancyReason = Literal[
    "quantity_mismatch",
    "kind_mismatch",
    "same_person",
    "missing_side",
    "double_relist",
    "unknown_return",
]
"""Why the two sides of a stock movement did not make a verified movement (the one list: the audit
service's rules decide them, `inventory.discrepancy` carries them)."""


class DiscrepancyFound(Message):
    TYPE: ClassVar[str] = "inventory.discrepancy"
    type: Literal["inventory.discrepancy"] = "inventory.discrepancy"
    discrepancy_id: str
    reason: DiscrepancyReason
    sku: str | None = None
    details: str
    movement: Movement | None = None
    sides: list[str] | None = Field(default=None, description="the attestations involved, as source:id")
    audit_seq: int | None = Field(default=None, description="sequence number of the audit-log entry")
    audit_hash: str | None = Field(default=None, description="hash of that entry: an external anchor of the chain")


class DiscrepancyResolved(Message):
    """A person resolved a dual-check discrepancy (recorded in the audit log first)."""

    TYPE: ClassVar[str] = "inventory.discrepancy_resolved"
    type: Literal["inventory.discrepancy_resolved"] = "inventory.discrepancy_resolved"
    discrepancy_id: str
    reason: DiscrepancyReason
    sku: str | None = None
    resolved_by: str = Field(description="the person whose token resolved it (never one who attested a side)")
    note: str = Field(description="how it was resolved, in their words")
    audit_seq: int | None = Field(default=None, description="sequence number of the resolution's audit-log entry")
    audit_hash: str | None = Field(default=None, description="hash of that entry")


NO_RETURN = UUID(int=0)
"""The return id of messages that belong to no return (the audit log's anchors): the nil UUID."""


class AuditAnchored(Message):
    """The audit log's chain head, published outside PostgreSQL so that a rewrite of the log by someone
    with database write access (who can recompute every later hash) no longer matches what was
    published. `hashes` lists the hash of every entry appended since the previous anchor (entries
    `seq - len(hashes) + 1` .. `seq`), so `returnflow audit verify` can name the first rewritten entry,
    not only the anchor after it."""

    TYPE: ClassVar[str] = "audit.anchored"
    type: Literal["audit.anchored"] = "audit.anchored"
    seq: int = Field(ge=0, description="sequence number of the log's last entry (0: the log is empty)")
    hash: str = Field(pattern=r"^[0-9a-f]{64}$", description="hash of that entry (64 zeros for an empty log)")
    entries: int = Field(ge=0, description="how many entries the log held (sequence numbers run 1..seq, no gaps)")
    hashes: list[str] = Field(
        default_factory=list,
        description="hashes of the entries appended since the previous anchor, in order, ending with `hash`",
    )
    reason: Literal["batch", "schedule"] = Field(
        description="batch: entries were appended; schedule: the periodic anchor of an unchanged head"
    )


class ReplacementLine(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    sku: Sku
    qty: int = Field(ge=1)


class ReplacementShipped(Message):
    """An exchange's replacement left the warehouse for the customer (once per exchange)."""

    TYPE: ClassVar[str] = "exchange.replacement_shipped"
    type: Literal["exchange.replacement_shipped"] = "exchange.replacement_shipped"
    shipment_id: str
    warehouse_id: str
    carrier: str
    tracking_no: str = Field(description="the outgoing parcel's tracking number")
    lines: list[ReplacementLine]
    shipped_by: str
    shipped_at: datetime


class ReplacementDelivered(Message):
    """The outgoing parcel's courier scanned it delivered to the customer."""

    TYPE: ClassVar[str] = "exchange.replacement_delivered"
    type: Literal["exchange.replacement_delivered"] = "exchange.replacement_delivered"
    shipment_id: str
    carrier: str
    tracking_no: str
    scan_id: str
    delivered_at: datetime


class ReplacementReleased(Message):
    """The shop's policy lets an exchange's replacement ship before its goods arrive: the returned parcel
    was seen moving and the exchange is within the early refund's cap and clawback gate (once per return).
    The warehouse may ship it from now on, not only after a receipt."""

    TYPE: ClassVar[str] = "exchange.replacement_released"
    type: Literal["exchange.replacement_released"] = "exchange.replacement_released"
    basis: Literal["first_moving_scan"] = Field(
        default="first_moving_scan", description="what released it: the returned parcel's first moving scan"
    )
    note: str | None = None


class ExchangeOutOfStock(Message):
    """The warehouse has no replacement to send: the exchange waits for a person (convert to a refund,
    or wait for stock)."""

    TYPE: ClassVar[str] = "exchange.out_of_stock"
    type: Literal["exchange.out_of_stock"] = "exchange.out_of_stock"
    skus: list[Sku]
    warehouse_id: str
    reported_by: str
    note: str | None = None


class RefundDecided(Message):
    TYPE: ClassVar[str] = "refund.decided"
    type: Literal["refund.decided"] = "refund.decided"
    decision: Literal["refund", "reject"]
    amount: MinorUnits
    currency: Currency
    basis: RefundBasis | None = None
    actor_id: str | None = None
    actor_role: Role | None = None
    note: str | None = None
    refund_id: str | None = Field(default=None, description="the ledger entry paid for this decision")


class RefundEscalated(Message):
    TYPE: ClassVar[str] = "refund.escalated"
    type: Literal["refund.escalated"] = "refund.escalated"
    amount: MinorUnits
    currency: Currency
    required_role: Role
    requested_by: str | None = None
    reason: str
    escalation_id: str | None = None
    basis: RefundBasis | None = None


class RefundIssued(Message):
    TYPE: ClassVar[str] = "refund.issued"
    type: Literal["refund.issued"] = "refund.issued"
    refund_id: str
    amount: MinorUnits
    currency: Currency
    basis: RefundBasis
    gateway_reference: str


class RefundFailed(Message):
    TYPE: ClassVar[str] = "refund.failed"
    type: Literal["refund.failed"] = "refund.failed"
    refund_id: str
    amount: MinorUnits
    currency: Currency
    error: str
    retryable: bool
    attempts: int | None = Field(default=None, description="gateway attempts so far for this refund")


class ClawbackFlagged(Message):
    TYPE: ClassVar[str] = "refund.clawback_flagged"
    type: Literal["refund.clawback_flagged"] = "refund.clawback_flagged"
    amount: MinorUnits
    currency: Currency
    receipt_id: str
    reason: str
    clawback_id: str | None = None
    refund_id: str | None = Field(default=None, description="the early refund the clawback is about")


class RefundFailureResolved(Message):
    """A person (supervisor or above) decided what becomes of a refund the gateway declined for good."""

    TYPE: ClassVar[str] = "refund.failure_resolved"
    type: Literal["refund.failure_resolved"] = "refund.failure_resolved"
    refund_id: str = Field(description="the declined ledger entry")
    action: Literal["retry", "settled_offline", "close"]
    amount: MinorUnits
    currency: Currency
    resolved_by: str
    resolved_role: Role
    note: str | None = None
    retry_refund_id: str | None = Field(default=None, description="the new ledger entry paid again (action retry)")


class ClawbackResolved(Message):
    """A person (supervisor or above) closed a clawback; nothing is ever charged automatically."""

    TYPE: ClassVar[str] = "refund.clawback_resolved"
    type: Literal["refund.clawback_resolved"] = "refund.clawback_resolved"
    clawback_id: str
    resolution: Literal["waived", "recovered_off_platform", "written_off"]
    amount: MinorUnits
    currency: Currency
    resolved_by: str
    resolved_role: Role
    note: str | None = None


class RefundCommand(Message):
    """Command on `refunds.commands`: what an actor decides about a return's refund."""

    TYPE: ClassVar[str] = "refund.command"
    type: Literal["refund.command"] = "refund.command"
    action: Literal["approve", "reject", "grant_free_refund", "convert_to_refund"]
    actor_id: str
    amount: MinorUnits | None = None
    note: str | None = None
    escalation_id: str | None = Field(
        default=None,
        description="approve / reject this open escalation of the return; left out: the oldest one the actor's "
        "authority covers (else the oldest)",
    )
    signature: str | None = Field(
        default=None,
        description="Ed25519 signature (standard base64) by `actor_id` over the canonical form: this JSON object "
        "without `signature`, keys sorted, no whitespace, UTF-8. Required by the consumer; optional in the "
        "schema only so that older producers still validate (their commands are refused, recorded).",
    )


class SmsEvent(Message):
    step: str
    phone_masked: str
    locale: str


class SmsSent(SmsEvent):
    TYPE: ClassVar[str] = "sms.sent"
    type: Literal["sms.sent"] = "sms.sent"
    provider: str
    provider_message_id: str


class SmsDeferred(SmsEvent):
    TYPE: ClassVar[str] = "sms.deferred"
    type: Literal["sms.deferred"] = "sms.deferred"
    deliver_after: datetime
    reason: str


class SmsSuppressed(SmsEvent):
    TYPE: ClassVar[str] = "sms.suppressed"
    type: Literal["sms.suppressed"] = "sms.suppressed"
    reason: str


class SmsFailed(SmsEvent):
    TYPE: ClassVar[str] = "sms.failed"
    type: Literal["sms.failed"] = "sms.failed"
    provider: str
    error: str


EVENT_MODELS: tuple[type[Message], ...] = (
    ReturnRequested,
    ReturnCancelled,
    TrackingRegistered,
    ParcelScanned,
    ReturnReceived,
    InventoryAttested,
    InventoryCheck,
    MovementVerified,
    DiscrepancyFound,
    RefundDecided,
    RefundEscalated,
    RefundIssued,
    RefundFailed,
    ClawbackFlagged,
    RefundCommand,
    RefundFailureResolved,
    ClawbackResolved,
    DiscrepancyResolved,
    SmsSent,
    SmsDeferred,
    SmsSuppressed,
    SmsFailed,
    AuditAnchored,
    ReplacementShipped,
    ReplacementDelivered,
    ExchangeOutOfStock,
    ReplacementReleased,
)
EVENT_TYPES: dict[str, type[Message]] = {m.TYPE: m for m in EVENT_MODELS}
