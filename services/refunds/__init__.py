"""The refunds service: refund policy (authority presets, early refund on a moving scan, receipt refunds),
people's decisions over HTTP and `refunds.commands`, and an exactly-once ledger paid through the gateway.

    api.py         the HTTP routes          handlers.py   consumer, command and payment steps
    rules.py       pure decisions           events.py     decisions -> integration events
    repository.py  SQL reads and writes     views.py      read-side queries for the GETs
    gateway.py     the payment gateway      dev/          simulated gateway, development roster
"""

from __future__ import annotations

from pathlib import Path

from contracts.catalog import topic_of
from contracts.events import (
    ExchangeOutOfStock,
    ParcelScanned,
    RefundCommand,
    ReplacementShipped,
    ReturnCancelled,
    ReturnReceived,
    ReturnRequested,
)
from returnflow.service import ConsumerSpec, ServiceSpec
from services.refunds import api, handlers, views
from services.refunds.handlers import RefundsContext
from services.refunds.settings import RefundsSettings

LIFECYCLE_TOPICS = [
    topic_of(ReturnRequested),
    topic_of(ReturnCancelled),
    topic_of(ParcelScanned),
    topic_of(ReturnReceived),
    topic_of(RefundCommand),
    topic_of(ReplacementShipped),  # an exchange shipped is no longer converted to a refund
    topic_of(ExchangeOutOfStock),  # ... and one out of stock waits for a person to convert it
]

SPEC: ServiceSpec[RefundsContext] = ServiceSpec(
    name="refunds",
    folder=Path(__file__).parent,
    description="Refund policy (authority presets, early refund on a moving scan, receipt refunds), people's "
    "decisions over HTTP and refunds.commands, and an exactly-once ledger paid through the gateway.",
    settings=RefundsSettings,
    context=handlers.build_context,
    close=handlers.close_context,
    router=api.router,
    readers=api.roster_reader,
    consumers=[ConsumerSpec("lifecycle", LIFECYCLE_TOPICS, apply=handlers.apply_lifecycle)],
    workers=[handlers.payment_worker],
    idle=handlers.nothing_to_pay,
    backlogs=views.backlogs,
)

__all__ = ["SPEC"]
