"""The audit service: the dual-check inventory log.

In: warehouse attestations (`inventory.attestations`), returns-team checks (`inventory.checks`,
`POST /v1/inventory/checks`), `returns.requested` (which returns exist) and `returns.received`
(what came back, for reconciliation). Out: `inventory.verified`, `inventory.discrepancies`, an
append-only hash-chained log, discrepancy and reconciliation APIs. A background sweeper closes
sides left alone past the deadline; its state is in PostgreSQL, so it resumes after a restart.

rules.py decides, handlers.py loads -> decides -> records, events.py maps decisions to log entries
and integration events, repository.py writes, views.py reads, api.py is the HTTP surface, chain.py
the hash chain. The chain head is anchored outside PostgreSQL: on `audit.anchors` (through the
outbox) and in a JSON-lines file, checked by `returnflow audit verify --anchors-topic/--anchors-file`.
"""

from pathlib import Path

from returnflow.service import ConsumerSpec, ServiceSpec
from services.audit import api, handlers, views
from services.audit.handlers import AuditContext
from services.audit.settings import AuditSettings

CONSUMED_TOPICS = ["inventory.attestations", "inventory.checks", "returns.requested", "returns.received"]

SPEC: ServiceSpec[AuditContext] = ServiceSpec(
    name="audit",
    folder=Path(__file__).parent,
    description=(
        "Dual-check inventory log: every stock movement of a return attested by the warehouse and by the "
        "returns team (two people, within a deadline); discrepancies for the rest; an append-only "
        "hash-chained log with `returnflow audit verify`."
    ),
    settings=AuditSettings,
    context=handlers.build_context,
    close=handlers.close_context,
    router=api.router,
    readers=api.people_reader,
    consumers=[ConsumerSpec("inventory", CONSUMED_TOPICS, apply=handlers.apply_inventory)],
    workers=[handlers.deadline_sweeper, handlers.anchor_keeper],
    idle=handlers.nothing_due,
    backlogs=views.backlogs,
)

__all__ = ["SPEC"]
