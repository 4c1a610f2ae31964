"""The topic catalog: one topic per event type, key = return id, JSON values.

`returnflow up` creates these topics; README's topic table and deploy manifests derive from it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from contracts import events as ev

DLQ_SUFFIX = ".dlq"

HEADER_TYPE = "rf-type"
HEADER_VERSION = "rf-version"
HEADER_CORRELATION_ID = "rf-correlation-id"
HEADER_EVENT_ID = "rf-event-id"
# Dead-letter headers, set when a message is moved to <topic>.dlq
HEADER_DLQ_TOPIC = "rf-dlq-original-topic"
HEADER_DLQ_PARTITION = "rf-dlq-original-partition"
HEADER_DLQ_OFFSET = "rf-dlq-original-offset"
HEADER_DLQ_CONSUMER = "rf-dlq-consumer-group"
HEADER_DLQ_ERROR_TYPE = "rf-dlq-error-type"
HEADER_DLQ_ERROR_MESSAGE = "rf-dlq-error-message"
HEADER_DLQ_ATTEMPTS = "rf-dlq-attempts"
HEADER_REPLAYED = "rf-replayed-from-dlq"


@dataclass(frozen=True)
class Topic:
    name: str
    model: type[ev.Message]
    producer: str
    consumers: tuple[str, ...]
    partitions: int = 4
    retention_hours: int = 168  # -1: kept forever
    timeline: bool = True
    description: str = ""
    key: str = "return id"

    @property
    def retention_ms(self) -> int:
        """Kafka's `retention.ms` (-1: never deleted)."""
        return -1 if self.retention_hours < 0 else self.retention_hours * 3_600_000

    @property
    def retention_text(self) -> str:
        return "forever" if self.retention_hours < 0 else f"{self.retention_hours // 24} d"

    @property
    def dlq(self) -> str:
        return dlq_topic(self.name)


def dlq_topic(name: str) -> str:
    return name + DLQ_SUFFIX


CATALOG: tuple[Topic, ...] = (
    Topic(
        "returns.requested",
        ev.ReturnRequested,
        "returns",
        ("warehouse", "refunds", "notify", "audit"),
        description="a return request accepted from a platform webhook",
    ),
    Topic(
        "returns.cancelled",
        ev.ReturnCancelled,
        "returns",
        ("warehouse", "refunds", "notify"),
        description="the customer cancelled the return",
    ),
    Topic(
        "returns.tracking-registered",
        ev.TrackingRegistered,
        "returns",
        ("warehouse",),
        description="a tracking number was registered on a return",
    ),
    Topic(
        "parcels.scanned",
        ev.ParcelScanned,
        "warehouse",
        ("returns", "refunds", "notify"),
        description="a distinct carrier scan matched to a return",
    ),
    Topic(
        "returns.received",
        ev.ReturnReceived,
        "warehouse",
        ("returns", "refunds", "notify", "audit"),
        description="the warehouse recorded what came back",
    ),
    Topic(
        "inventory.attestations",
        ev.InventoryAttested,
        "warehouse",
        ("audit",),
        description="warehouse side of a dual-check stock movement",
    ),
    Topic(
        "inventory.checks",
        ev.InventoryCheck,
        "ops / returns team",
        ("audit",),
        timeline=False,
        description="command: returns-team side of a dual-check stock movement",
    ),
    Topic(
        "inventory.verified",
        ev.MovementVerified,
        "audit",
        ("returns",),
        description="a stock movement attested by both sides",
    ),
    Topic(
        "inventory.discrepancies",
        ev.DiscrepancyFound,
        "audit",
        ("returns", "notify"),  # notify: the merchant's webhook (return.discrepancy)
        description="a dual-check discrepancy for a person to resolve",
    ),
    Topic(
        "inventory.discrepancies-resolved",
        ev.DiscrepancyResolved,
        "audit",
        ("returns",),
        description="a person resolved a dual-check discrepancy",
    ),
    Topic(
        "audit.anchors",
        ev.AuditAnchored,
        "audit",
        (),  # read by `returnflow audit verify` and by ops' shipping to a third place, not by a service
        partitions=1,  # one ordered stream of chain heads
        retention_hours=-1,  # an anchor protects its entries only while it is kept
        timeline=False,
        key="none (nil UUID)",
        description="the audit log's chain head, kept outside PostgreSQL (`returnflow audit verify`)",
    ),
    Topic(
        "exchanges.replacement-shipped",
        ev.ReplacementShipped,
        "warehouse",
        ("notify", "refunds"),
        description="an exchange's replacement left the warehouse (outgoing tracking number)",
    ),
    Topic(
        "exchanges.replacement-delivered",
        ev.ReplacementDelivered,
        "warehouse",
        (),  # the timeline's (returns): the customer holds the parcel, no text needed
        description="the outgoing parcel was scanned delivered: the exchange is done",
    ),
    Topic(
        "exchanges.out-of-stock",
        ev.ExchangeOutOfStock,
        "warehouse",
        ("notify", "refunds"),  # refunds: the exchange waits in the people's queue (convert, or wait)
        description="no replacement in stock: a person converts to a refund or waits for stock",
    ),
    Topic(
        "exchanges.replacement-released",
        ev.ReplacementReleased,
        "refunds",
        ("warehouse",),  # the replacement may ship before the goods are received
        description="the shop ships this exchange's replacement at the first moving scan: released before receipt",
    ),
    Topic(
        "refunds.decided",
        ev.RefundDecided,
        "refunds",
        ("returns", "notify", "warehouse"),  # an exchange converted to a refund: news; no replacement ships
        description="a refund decision took effect",
    ),
    Topic(
        "refunds.escalated",
        ev.RefundEscalated,
        "refunds",
        ("returns", "notify"),
        description="a refund waits for an actor whose role covers the amount",
    ),
    Topic(
        "refunds.issued",
        ev.RefundIssued,
        "refunds",
        ("returns", "notify"),
        description="the payment gateway paid a refund",
    ),
    Topic(
        "refunds.failed",
        ev.RefundFailed,
        "refunds",
        ("returns", "notify"),  # notify: the merchant's webhook (refund.failed)
        description="a refund attempt failed",
    ),
    Topic(
        "refunds.clawbacks",
        ev.ClawbackFlagged,
        "refunds",
        ("returns", "notify"),  # notify: the merchant's webhook (return.needs_person)
        description="goods missing or not as described after an early refund: for a person",
    ),
    Topic(
        "refunds.failures-resolved",
        ev.RefundFailureResolved,
        "refunds",
        ("returns",),
        description="a person decided what becomes of a declined refund (retry, settled offline, close)",
    ),
    Topic(
        "refunds.clawbacks-resolved",
        ev.ClawbackResolved,
        "refunds",
        ("returns",),
        description="a person closed a clawback (waived, recovered off-platform, written off)",
    ),
    Topic(
        "refunds.commands",
        ev.RefundCommand,
        "ops / agents",
        ("refunds",),
        timeline=False,
        description="command: approve, reject or grant a free refund",
    ),
    Topic("sms.sent", ev.SmsSent, "notify", ("returns",), description="an SMS was accepted by the provider"),
    Topic("sms.deferred", ev.SmsDeferred, "notify", ("returns",), description="an SMS waits for daytime"),
    Topic(
        "sms.suppressed",
        ev.SmsSuppressed,
        "notify",
        ("returns",),
        description="an SMS was not sent (opt-out, cap, duplicate)",
    ),
    Topic("sms.failed", ev.SmsFailed, "notify", ("returns",), description="the provider refused an SMS"),
)


def _with_timeline(topics: tuple[Topic, ...]) -> tuple[Topic, ...]:
    """The returns service reads every lifecycle topic it does not produce, to build the timeline."""
    return tuple(
        replace(t, consumers=(*t.consumers, "returns"))
        if t.timeline and t.producer != "returns" and "returns" not in t.consumers
        else t
        for t in topics
    )


CATALOG = _with_timeline(CATALOG)

TOPICS_BY_NAME: dict[str, Topic] = {t.name: t for t in CATALOG}
_TOPIC_BY_TYPE: dict[str, Topic] = {t.model.TYPE: t for t in CATALOG}


def topic_for_type(event_type: str) -> Topic:
    return _TOPIC_BY_TYPE[event_type]


def topic_of(model: type[ev.Message]) -> str:
    return _TOPIC_BY_TYPE[model.TYPE].name


def all_topic_names(with_dlq: bool = True) -> list[tuple[str, int]]:
    """(name, partitions) for every topic, DLQs included (one per consumed topic)."""
    out = [(t.name, t.partitions) for t in CATALOG]
    if with_dlq:
        out += [(t.dlq, 1) for t in CATALOG if t.consumers]
    return out
