"""The notify service: lifecycle events in, SMS out (one per return and step, in the customer's
language, never at night, never after STOP), reminders on a PostgreSQL schedule, and the provider's
inbound-SMS and delivery-status webhooks. Its SPEC is what the platform app runs."""

from __future__ import annotations

from pathlib import Path

from returnflow.service import ConsumerSpec, ServiceSpec
from services.notify import api, handlers, views
from services.notify.handlers import NotifyContext
from services.notify.settings import NotifySettings

SPEC: ServiceSpec[NotifyContext] = ServiceSpec(
    name="notify",
    folder=Path(__file__).parent,
    description="SMS follow-ups: one message per return and step, in the customer's language, never at "
    "night, never after STOP; reminders on a PostgreSQL schedule; inbound and delivery webhooks; merchants' "
    "signed webhooks (Standard Webhooks), retried for hours, with a delivery log.",
    settings=NotifySettings,
    context=handlers.build_context,
    close=handlers.close_context,
    router=api.router,
    consumers=[ConsumerSpec("lifecycle", handlers.CONSUMED, apply=handlers.apply_lifecycle)],
    workers=[handlers.send_sms, handlers.send_webhooks],
    idle=handlers.workers_idle,
    backlogs=views.all_backlogs,
)

__all__ = ["SPEC"]
